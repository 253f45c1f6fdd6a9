"""Image and text towers: ViT, the big_vision text transformer, and a BERT tower (MiniLM).

Parameter names follow big_vision so that .npz checkpoints load by name (towers.checkpoints).
"""
