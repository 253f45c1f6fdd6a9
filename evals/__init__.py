"""Evaluation metrics and suites. Evals consume embeddings, logits and probabilities only.

Built so far: calibration (ECE, NLL, Brier), uncertainty (total / data / knowledge, AUROC,
prediction rejection ratio), retrieval recall@k and zero-shot classification with prompt
ensembles. Probes and the `hetclip eval` command are still to come.
"""
