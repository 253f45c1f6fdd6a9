"""The HET-XL seed recipe: ViT-L/32 on ImageNet-21k (21,843 classes) with a sigmoid HET-XL head.

Collier et al. (2023) / uncertainty-baselines: R = 50 factors, S = 1000 MC samples, learned
temperature in [0.05, 5], head bias -10, Adam (0.9, 0.999), weight decay 0.1, clip 1.0, batch
4096, 10k warm-up steps from 1e-5 to 6e-4 then linear decay, 7 epochs (the seed's setup).

  hetclip train --config i21k_hetxl_vit_l32.py --workdir runs/i21k     (TFDS imagenet21k)
  hetclip train --config i21k_hetxl_vit_l32.py:head=det ...            the DET baseline

Arguments: head ("hetxl" | "het" | "det"), samples (1000), batch (4096), epochs (7), res (224).
"""

import ml_collections

from hetclip.configs import common

TRAIN_EXAMPLES = 12_719_879  # imagenet21k train split after the usual held-out carve-out
NUM_CLASSES = 21_843


def get_config(arg=None):
    arg = arg or ml_collections.ConfigDict()
    batch = arg.get("batch", 4096)
    steps = arg.get("epochs", 7) * TRAIN_EXAMPLES // batch
    res = arg.get("res", 224)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.input = ml_collections.ConfigDict()
    config.input.data = ml_collections.ConfigDict(
        {"kind": "tfds", "name": "imagenet21k", "split": "train[:98%]"}
    )
    config.input.shuffle = True
    # ImageNet-21k labels are multi-label in the reference pipeline: a multi-hot target.
    config.input.pp = (
        f"decode|inception_crop({res})|flip_lr|value_range(-1, 1)"
        f"|onehot({NUM_CLASSES})|keep('image', 'labels')"
    )
    config.input.pp_eval = (
        f"decode|resize_small({res * 8 // 7})|central_crop({res})|value_range(-1, 1)"
        f"|onehot({NUM_CLASSES})|keep('image', 'labels')"
    )
    config.input.tokenizer = ""
    common.training_sections(config, total_steps=steps, batch_size=batch)
    head = arg.get("head", "hetxl")
    head_config = {"kind": head, "num_classes": NUM_CLASSES, "form": "sigmoid", "bias_init": -10.0}
    if head != "det":
        head_config.update(num_factors=50, num_samples=arg.get("samples", 1000))
    if head == "hetxl":
        head_config.update(learn_temperature=True, temperature_bounds=(0.05, 5.0))
    config.model = ml_collections.ConfigDict(
        {
            "kind": "classifier",
            "image": {
                "kind": "vit",
                "variant": "L/32",
                "pool": "tok",
                "dtype": "bfloat16",
                "remat": True,
                "scan": True,
            },
            "head": head_config,
        }
    )
    config.loss = ml_collections.ConfigDict()
    config.schedule.update(
        peak=6e-4, init_value=1e-5, end_value=0.0, warmup_steps=10_000, decay="linear"
    )
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1})
    config.checkpoint.every = 1000
    config.log_every = 100
    return config
