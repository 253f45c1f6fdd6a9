"""Ensemble distribution distillation (PD-EnD2) on the embedded Fashion-MNIST set: a small ViT
with a DET head learns a Dirichlet whose mean is the teachers' mean prediction and whose
spread is their disagreement (hetclip/train/distill.py).

  for seed in 0 1 2 3; do
    hetclip train --config fashion_mnist.py:head=det --config.seed=$seed --workdir runs/fm_det_$seed
  done
  hetclip train --workdir runs/fm_pd --config \
    "fashion_mnist_distill.py:teachers=['runs/fm_det_0','runs/fm_det_1','runs/fm_det_2','runs/fm_det_3']"

Arguments: teachers (list of teacher workdirs, required), loss ("pd_end2" | "end2" | "end"),
members ("teachers" | "samples": one HET-XL teacher's MC samples), plus fashion_mnist.py's
batch, steps and size.
"""

import ml_collections

from hetclip.configs import fashion_mnist


def get_config(arg=None):
    arg = arg or ml_collections.ConfigDict()
    if "teachers" not in arg:
        raise ValueError(
            "fashion_mnist_distill.py needs teachers=['workdir', ...]: the workdirs of finished "
            "fashion_mnist.py runs (one model config, different seeds)."
        )
    student = ml_collections.ConfigDict({k: arg[k] for k in ("batch", "steps", "size") if k in arg})
    student.head = "det"
    config = fashion_mnist.get_config(student)
    config.distill = ml_collections.ConfigDict(
        {
            "teachers": list(arg.teachers),
            "loss": arg.get("loss", "pd_end2"),
            "members": arg.get("members", "teachers"),
            "estimator": "mkl",
            "max_precision": None,
        }
    )
    return config
