"""The tiny CPU default: the embedded image-text set at 64 px.

hetclip data inspect --config default.py
hetclip data inspect --config default.py:batch=64 --config.input.data.split=validation
"""

import ml_collections


def get_config(arg=None):
    arg = arg or ml_collections.ConfigDict()
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.input = ml_collections.ConfigDict()
    config.input.data = ml_collections.ConfigDict(
        {"kind": "prepared", "name": "imagetext", "split": "train"}
    )
    config.input.batch_size = arg.get("batch", 256)
    config.input.shuffle = True
    res = arg.get("res", 64)
    config.input.pp = (
        f"decode|inception_crop({res}, area_min=50)|flip_lr|value_range(-1, 1)"
        "|choice|tokenize(max_len=32)|keep('image', 'text')"
    )
    config.input.pp_eval = (
        f"decode|resize({res})|value_range(-1, 1)|first|tokenize(max_len=32)"
        "|keep('image', 'text', 'category', 'source')"
    )
    # '{data_dir}' is filled in with $HETCLIP_DATA_DIR when the pipeline is built.
    config.input.tokenizer = "sp:{data_dir}/imagetext/tokenizer.model"
    return config
