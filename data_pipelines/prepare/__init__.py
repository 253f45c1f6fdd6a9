"""Preparation of the embedded default data sets from registry packages (`hetclip data prepare`).

DATASETS maps a data set name to its builder module; each writes shards, a tokenizer where it
needs one, and manifest.json under <data_dir>/<name>/.
"""

DATASETS = {
    "imagetext": "data_pipelines.prepare.imagetext",
    "fashion_mnist": "data_pipelines.prepare.fashion_mnist",
}
