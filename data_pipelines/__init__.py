"""Input pipelines: sources, preprocessing ops, tokenization and dataset preparation.

This package never imports model code (hetclip heads, towers); it hands out dicts of numpy arrays.
"""

import os

# TF's C++ start-up chatter (CUDA probing, oneDNN notices) buries real messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def hide_accelerators_from_tf() -> None:
    """Keeps tf.data on the host so TF never allocates GPU/TPU memory that JAX needs."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # devices already initialised or the kind is unknown: nothing to hide
