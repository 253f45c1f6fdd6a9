"""ViT-B/16 CLIP at 224 px with a 12-layer width-512 text transformer (open_clip's ViT-B-16 shape).

  hetclip train --config clip_vit_b16.py:data=/data/laion/{00000..01023}.tar --workdir runs/b16
  hetclip train --config clip_vit_b16.py:hetxl=True,...      HET-XL noise on image embeddings

Arguments: data (webdataset shard pattern; default the embedded imagetext set), batch (32768 over
the mesh), steps, hetxl (False), sigmoid (False: CLIP softmax; True: SigLIP), vocab (32000),
tokenizer (an sp: or wordpiece: spec), accum (gradient-caching micro-batches per step).
"""

import ml_collections

from hetclip.configs import common


def get_config(arg=None):
    arg = arg or ml_collections.ConfigDict()
    sigmoid = arg.get("sigmoid", False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.input = ml_collections.ConfigDict()
    if arg.get("data"):
        config.input.data = ml_collections.ConfigDict(
            {"kind": "webdataset", "files": arg.get("data")}
        )
    else:
        config.input.data = ml_collections.ConfigDict(
            {"kind": "prepared", "name": "imagetext", "split": "train"}
        )
    config.input.shuffle = True
    config.input.pp = (
        "decode|inception_crop(224, area_min=40)|value_range(-1, 1)"
        "|choice|tokenize(max_len=64)|keep('image', 'text')"
    )
    config.input.pp_eval = (
        "decode|resize_small(224)|central_crop(224)|value_range(-1, 1)|first"
        "|tokenize(max_len=64)|keep('image', 'text', 'category', 'source')"
    )
    config.input.pp_text = "tokenize(max_len=64)"
    config.input.tokenizer = arg.get("tokenizer", "sp:{data_dir}/imagetext/tokenizer.model")
    steps = arg.get("steps", 100_000)
    common.training_sections(config, total_steps=steps, batch_size=arg.get("batch", 32_768))
    config.model = common.two_towers_model(
        image={
            "kind": "vit",
            "variant": "B/16",
            "pool": "map" if sigmoid else "tok",
            "dtype": "bfloat16",
            "remat": True,
            "scan": True,
        },
        text={
            "kind": "text_transformer",
            "variant": "M",
            "vocab_size": arg.get("vocab", 32_000),
            "pool": "last",
            "dtype": "bfloat16",
            "remat": True,
            "scan": True,
        },
        embed_dim=512,
        hetxl=arg.get("hetxl", False),
        sigmoid=sigmoid,
    )
    config.loss = common.contrastive_loss(sigmoid)
    # Chunk the global batch so a device holds [B_local, 4096] logits, not [B_local, B].
    if sigmoid:
        config.loss.exchange = "ring"
    else:
        config.loss.column_block = 4096
    config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "model": 1})
    config.train.accum_steps = arg.get("accum", 1)
    config.schedule.update(peak=5e-4, warmup_steps=min(10_000, steps // 10))
    config.optim.weight_decay = 0.2
    config.checkpoint.every = 1000
    config.log_every = 50
    return config
