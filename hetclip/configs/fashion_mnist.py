"""Supervised pretraining at CPU size: a small ViT with a DET / HET / HET-XL head on the embedded
Fashion-MNIST set (10 classes, 28 px greyscale; `hetclip data prepare --name fashion_mnist`).

  hetclip train --config fashion_mnist.py --workdir runs/fmnist               HET-XL softmax
  hetclip train --config fashion_mnist.py:head=det --workdir runs/fmnist_det
  hetclip train --config fashion_mnist.py:form=sigmoid ...                     multi-label form

Arguments: head ("hetxl" | "het" | "det"), form ("softmax" | "sigmoid"), samples (16),
batch (256), steps (500), size ("Ti"; "mu" for tests).
"""

import ml_collections

from hetclip.configs import common


def get_config(arg=None):
    arg = arg or ml_collections.ConfigDict()
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.input = ml_collections.ConfigDict()
    config.input.data = ml_collections.ConfigDict(
        {"kind": "prepared", "name": "fashion_mnist", "split": "train"}
    )
    config.input.shuffle = True
    config.input.pp = (
        "decode(channels=3)|resize(32)|flip_lr|value_range(-1, 1)|keep('image', 'label')"
    )
    config.input.pp_eval = "decode(channels=3)|resize(32)|value_range(-1, 1)|keep('image', 'label')"
    config.input.tokenizer = ""
    common.training_sections(
        config, total_steps=arg.get("steps", 500), batch_size=arg.get("batch", 256)
    )
    head, form = arg.get("head", "hetxl"), arg.get("form", "softmax")
    head_config = {"kind": head, "num_classes": 10, "form": form}
    if form == "sigmoid":
        head_config["bias_init"] = -2.0
    if head != "det":
        head_config.update(num_factors=4, num_samples=arg.get("samples", 16))
    config.model = ml_collections.ConfigDict(
        {
            "kind": "classifier",
            "image": {"kind": "vit", "variant": f"{arg.get('size', 'Ti')}/8", "pool": "gap"},
            "head": head_config,
        }
    )
    config.loss = ml_collections.ConfigDict()
    return config
