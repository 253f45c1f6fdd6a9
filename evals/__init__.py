"""Evaluation suites (zero-shot, retrieval, probes, calibration, uncertainty): not built yet.

Evals will consume embeddings and logits only (no training code); see the open issue for evals.
"""
