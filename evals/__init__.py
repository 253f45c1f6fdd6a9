"""Evaluation metrics and suites. Evals consume embeddings, logits and probabilities only.

Built so far: calibration (ECE, NLL, Brier), uncertainty (total / data / knowledge, AUROC,
prediction rejection ratio) and retrieval recall@k. Zero-shot classification, probes and the
`hetclip eval` command are still to come.
"""
