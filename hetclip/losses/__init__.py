"""Losses: contrastive image-text losses (CLIP softmax, SigLIP sigmoid) and their HET-XL forms,
single-device and sharded over a mesh. Pure functions of embeddings; no I/O."""
