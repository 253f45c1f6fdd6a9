"""Model assembly: towers + heads into the two model families hetclip trains.

  two_towers   image and text towers with a learned logit scale (and bias), optionally with
               HET-XL noise on the embeddings (hetclip.models.two_towers)
  classifier   an image tower with a DET / HET / HET-XL head (hetclip.models.classifier)

build_model(config.model) returns the flax module; hetclip.train.objectives owns the losses.
"""

from hetclip.models.build import MODEL_KINDS, build_model

__all__ = ["MODEL_KINDS", "build_model"]
