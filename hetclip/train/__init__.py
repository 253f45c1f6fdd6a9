"""The trainer: one loop for contrastive and supervised runs (see hetclip.train.loop)."""
