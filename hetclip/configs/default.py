"""The tiny CPU default: a HET-XL CLIP on the embedded image-text set at 64 px.

  hetclip train --config default.py --workdir runs/hetxl            HET-XL CLIP (the default)
  hetclip train --config default.py:hetxl=False --workdir runs/clip the deterministic baseline
  hetclip train --config default.py:loss=siglip --workdir runs/sig  SigLIP form
  hetclip data inspect --config default.py:batch=64 --config.input.data.split=validation

Arguments: hetxl (True), loss ("clip" | "siglip"), res (64), batch (256), steps (250),
size ("Ti" image / text width; "mu" is the test size).
"""

import ml_collections

from hetclip.configs import common


def get_config(arg=None):
    arg = arg or ml_collections.ConfigDict()
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.input = ml_collections.ConfigDict()
    config.input.data = ml_collections.ConfigDict(
        {"kind": "prepared", "name": "imagetext", "split": "train"}
    )
    config.input.shuffle = True
    res = arg.get("res", 64)
    config.input.pp = (
        f"decode|inception_crop({res}, area_min=50)|flip_lr|value_range(-1, 1)"
        "|choice|tokenize(max_len=16)|keep('image', 'text')"
    )
    config.input.pp_eval = (
        f"decode|resize({res})|value_range(-1, 1)|first|tokenize(max_len=16)"
        "|keep('image', 'text', 'category', 'source')"
    )
    config.input.pp_text = "tokenize(max_len=16)"  # prompts of zero-shot evals
    # '{data_dir}' is filled in with $HETCLIP_DATA_DIR when the pipeline is built.
    config.input.tokenizer = "sp:{data_dir}/imagetext/tokenizer.model"
    common.training_sections(
        config, total_steps=arg.get("steps", 250), batch_size=arg.get("batch", 256)
    )
    size = arg.get("size", "Ti")
    sigmoid = arg.get("loss", "clip") == "siglip"
    config.model = common.two_towers_model(
        image={"kind": "vit", "variant": f"{size}/16", "pool": "gap"},
        text={"kind": "text_transformer", "variant": size, "vocab_size": 4000, "pool": "last"},
        embed_dim=128,
        hetxl=arg.get("hetxl", True),
        sigmoid=sigmoid,
    )
    config.loss = common.contrastive_loss(sigmoid)
    config.checkpoint.every = 200
    config.eval_every = 200
    config.evals = ml_collections.ConfigDict(
        {
            # Categories never seen in training: zero-shot on unseen classes.
            "zeroshot_heldout": {"kind": "zeroshot", "split": "heldout"},
            # Categories seen in training, images not: zero-shot over all 300+ categories.
            "zeroshot_test": {"kind": "zeroshot", "split": "test"},
            "retrieval_test": {"kind": "retrieval", "split": "test"},
        }
    )
    return config
