"""A model's deterministic outputs over an evaluation pass, gathered from every process."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils


class Embedder:
    """A model's deterministic outputs over eval pipelines, on a mesh: a two_towers model's image
    / text embeddings, or a classifier's pre-logits.

    `class_cache` = (folder, model id) caches zero-shot class embeddings between evaluations of
    one fixed checkpoint (hetclip eval sets it; during training the parameters change)."""

    def __init__(self, model, config, mesh, class_cache: tuple[Path, str] | None = None):
        self.model, self.config, self.mesh = model, config, mesh
        self.class_cache = class_cache
        self._apply = jax.jit(lambda params, batch: model.apply({"params": params}, batch))
        self._tokenize = None

    def tokenize(self, strings: list[str]) -> np.ndarray:
        """[N, L] tokens of raw strings with config.input.pp_text (e.g. zero-shot prompts)."""
        import tensorflow as tf

        if self._tokenize is None:
            from data_pipelines import ops
            from data_pipelines.paths import data_dir

            tokenizer = self.config.input.get("tokenizer")
            defaults = {"tokenize": {"model": tokenizer.format(data_dir=data_dir())}}
            self._tokenize = ops.build(self.config.input.pp_text, defaults if tokenizer else {})
        return self._tokenize({"text": tf.constant(strings)})["text"].numpy()

    def pipeline(
        self, split: str | None = None, data: Mapping | None = None, pp: str | None = None
    ):
        """The eval pipeline of the config's data (or of `data`, a source spec) with pp_eval
        (or `pp`)."""
        from data_pipelines.input import pipeline_from_config

        input_config = self.config.input.to_dict()
        if data is not None:
            input_config["data"] = dict(data)
        if pp is not None:
            input_config["pp_eval"] = pp
        return pipeline_from_config(
            input_config, pp_key="pp_eval", split=split, seed=int(self.config.seed)
        )

    def labelled_pipeline(self, data: Mapping, label_key: str = "label", pp: str | None = None):
        """The eval pipeline of a labelled source spec: `pp`, or by default the image ops of
        config.input.pp_eval keeping the image and `label_key`."""
        from data_pipelines.ops import image_part

        pp = pp or f"{image_part(self.config.input.pp_eval)}|keep('image', '{label_key}')"
        return self.pipeline(data=data, pp=pp)

    def collect(
        self,
        params,
        pipeline,
        inputs: tuple[str, ...] = ("image", "text"),
        extra: Callable[[dict], dict[str, np.ndarray]] | None = None,
    ) -> dict[str, np.ndarray]:
        """One pass of `pipeline`: the model's outputs for `inputs` plus the numeric arrays
        `extra(batch)` returns (labels), gathered over processes, padding removed ([N, ...])."""
        from hetclip.sharding import global_batch

        parts: dict[str, list[np.ndarray]] = {}
        for local in pipeline.eval_batches():
            numeric = {k: local[k] for k in inputs}
            numeric["_mask"] = local["_mask"]
            if extra is not None:
                numeric.update(extra(local))
            batch = global_batch(numeric, self.mesh)
            out = self._apply(params, {k: batch[k] for k in inputs})
            carried = {k: v for k, v in batch.items() if k not in inputs}
            gathered = multihost_utils.process_allgather({**out, **carried}, tiled=True)
            keep = np.asarray(gathered.pop("_mask"), bool)
            for key, value in gathered.items():
                parts.setdefault(key, []).append(np.asarray(value)[keep])
        return {k: np.concatenate(v) for k, v in parts.items()}

    def split(self, params, split: str, labels_of: Callable[[dict], np.ndarray] | None = None):
        """(zimg [N, D], ztxt [N, D], labels [N] or None) over one pass of `split`."""
        extra = None if labels_of is None else (lambda local: {"label": labels_of(local)})
        out = self.collect(params, self.pipeline(split), extra=extra)
        return out["zimg"], out["ztxt"], out.get("label")

    def texts(self, params, strings: list[str], batch_size: int = 256) -> np.ndarray:
        """[N, D] text embeddings of raw strings."""
        parts = []
        for start in range(0, len(strings), batch_size):
            tokens = self.tokenize(strings[start : start + batch_size])
            parts.append(np.asarray(self._apply(params, {"text": tokens})["ztxt"]))
        return np.concatenate(parts)
