"""Sections every training config shares; config files start from these and change what differs.

Not a config itself (no get_config): `hetclip config show --config common.py` is an error.
"""

import ml_collections


def training_sections(config: ml_collections.ConfigDict, *, total_steps: int, batch_size: int):
    """Adds the trainer's sections with the seed recipe's optimiser (Adam b1 0.9, b2 0.999,
    decoupled weight decay 0.1, clip 1.0) and a short warm-up; configs scale them as needed."""
    config.total_steps = total_steps
    config.log_every = 10
    config.eval_every = 0
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1})
    config.optim = ml_collections.ConfigDict(
        {
            "name": "adamw",
            "b1": 0.9,
            "b2": 0.999,
            "weight_decay": 0.1,
            "grad_clip_norm": 1.0,
            "no_decay": [],
        }
    )
    config.schedule = ml_collections.ConfigDict(
        {
            "peak": 1e-3,
            "init_value": 0.0,
            "end_value": 0.0,
            "warmup_steps": max(1, total_steps // 10),
            "decay": "cosine",
        }
    )
    config.freeze = []
    config.init_from = ml_collections.ConfigDict()
    config.train = ml_collections.ConfigDict({"accum_steps": 1, "on_nonfinite": "skip"})
    config.checkpoint = ml_collections.ConfigDict({"every": 500, "keep": 3})
    config.input.batch_size = batch_size
    return config


def two_towers_model(image: dict, text: dict, embed_dim: int, *, hetxl: bool, sigmoid: bool):
    """A two_towers model section; HET-XL noise on the image side when `hetxl`."""
    model = ml_collections.ConfigDict(
        {
            "kind": "two_towers",
            "embed_dim": embed_dim,
            "image": image,
            "text": text,
            # SigLIP starts at t = log 10, b = -10; CLIP at t = log(1 / 0.07).
            "logit_scale_init": 2.302585 if sigmoid else 2.659260,
            "bias_init": -10.0 if sigmoid else None,
            "image_noise": None,
            "text_noise": None,
        }
    )
    if hetxl:
        model.image_noise = ml_collections.ConfigDict(
            {"num_factors": 16, "init_std": 0.01, "min_scale": 1e-4}
        )
    return model


def contrastive_loss(sigmoid: bool, num_samples: int = 16):
    return ml_collections.ConfigDict(
        {
            "kind": "siglip" if sigmoid else "clip",
            "num_samples": num_samples,
            "max_chunk": 8,
            "column_block": None,
            "exchange": "gather",
        }
    )
