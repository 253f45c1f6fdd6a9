"""What DET, HET and HET-XL heads share: the linear classifier and the output modes.

Every head maps pre-logits phi [B, D] to K classes and answers five questions (`mode`):
  "locs"                 [B, K]     deterministic logits / tau (no noise): for evaluation
  "log_likelihood"       [B]        log p(y|x) of the MC predictive (needs `labels`), streamed
                                    over chunks of samples
  "mean_log_likelihood"  []         its mean over the batch, the training loss's negative: value
                                    and gradient in one pass, each example's S samples drawn
                                    together (hetclip.heads.fused) for HET-XL when one
                                    example's [S, K] logits fit in `chunk_elements`; else the
                                    streamed mean
  "probs"                [B, K]     MC-averaged predictive probabilities
  "sample_probs"         [B, S, K]  each sample's predictive distribution (uncertainty metrics)
Noise comes from the "noise" RNG stream: `head.apply(params, phi, labels, rngs={"noise": key})`
(or from an explicit `key=`).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from hetclip.heads import fused, likelihood, mc
from hetclip.heads.noise import LowRankNoise
from hetclip.heads.partitioning import partitioned
from hetclip.heads.temperature import Temperature

MODES = ("locs", "log_likelihood", "mean_log_likelihood", "probs", "sample_probs")


class Head(nn.Module):
    """Base of the heads. Subclasses implement `noisy_logits` (or override the MC modes).

    Attributes:
      num_classes: K.
      form: "softmax" (one label per example) or "sigmoid" (multi-label).
      bias_init: initial classifier bias (-10 for sigmoid heads on 21k classes, as in the paper).
      num_samples: S, Monte Carlo samples used when a call does not say.
      max_chunk: at most this many samples are drawn at once while streaming.
      chunk_elements: and at most this many chunk logits (B * C * K) exist at once; bigger
        chunks make bigger, faster matmuls, smaller ones less memory (2**25 floats = 128 MB).
      max_block_rows: and the one-pass training mode ("mean_log_likelihood") takes at most
        this many logit rows (examples x S) per device at a time: smaller blocks stay in cache
        (at K = 1,000, 8 examples x 128 samples ran 1.2x faster than 32 x 128).
      dtype: compute dtype of the large matmuls (float32 or bfloat16); reductions stay float32.
    """

    # Heads without noise (DET) are exact with one "sample" and need no noise RNG.
    stochastic: ClassVar[bool] = True
    # The entries of noisy_logits' params with a leading [B] axis (the rest are shared).
    per_example_params: ClassVar[tuple[str, ...]] = ("locs", "scale", "diag")
    # Whether "mean_log_likelihood" takes the one-pass path (hetclip.heads.fused) when a block
    # fits: worth it where each sample costs a matmul the streamed backward pass would redo.
    one_pass_mean: ClassVar[bool] = False

    num_classes: int
    form: str = "softmax"
    bias_init: float = 0.0
    num_samples: int = 1000
    max_chunk: int = 64
    chunk_elements: int = 2**25
    max_block_rows: int = 1024
    dtype: jnp.dtype = jnp.float32

    def classifier(self, phi: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(W [D, K], b [K], locs = phi W + b [B, K])."""
        kernel = self.param(
            "kernel",
            partitioned(nn.initializers.lecun_normal(), ("embed", "classes")),
            (phi.shape[-1], self.num_classes),
        )
        bias = self.param(
            "bias",
            partitioned(nn.initializers.constant(self.bias_init), ("classes",)),
            (self.num_classes,),
        )
        locs = jnp.dot(phi.astype(self.dtype), kernel.astype(self.dtype)).astype(jnp.float32)
        return kernel, bias, locs + bias

    def noisy_logits(self, phi: jax.Array, num_samples: int):
        """(logits_fn, params, tau): logits_fn(params, key, C) -> [B, C, K] noisy logits / tau,
        params["locs"] [B, K] the deterministic logits (params may hold entries that only some
        modes read). `num_samples` is the call's S: a head may choose a cheaper form for one
        sample."""
        raise NotImplementedError

    def one_pass_block(
        self, logits_fn: likelihood.LogitsFn, params: dict, labels: jax.Array, num_samples: int
    ) -> tuple[likelihood.BlockLogLikelihoodFn, dict]:
        """The one-pass mode's (params, keys [b], S, labels [b]) -> [b] log-likelihood for these
        labels and S, and the entries of `params` it reads: by default `logits_fn`'s samples
        through `samples_log_likelihood`; a head overrides it where a fused form exists."""
        del labels, num_samples
        block_fn = functools.partial(likelihood.logits_block_log_likelihood, self.form, logits_fn)
        return block_fn, params

    @nn.compact
    def __call__(
        self,
        phi: jax.Array,
        labels: jax.Array | None = None,
        *,
        mode: str = "log_likelihood",
        num_samples: int | None = None,
        key: jax.Array | None = None,
    ) -> jax.Array:
        """See the module docstring; `key` overrides the "noise" RNG stream (reproducible
        noise, e.g. for reference tests)."""
        likelihood.check_form(self.form)
        if mode not in MODES:
            raise ValueError(f"Unknown head mode {mode!r}; use one of {MODES}.")
        samples = (num_samples or self.num_samples) if self.stochastic else 1
        logits_fn, params, tau = self.noisy_logits(phi, samples)
        if mode == "locs" or self.is_initializing():
            # Initialisation only creates parameters: it needs no noise and skips the MC work.
            return params["locs"] / tau
        per_sample = phi.shape[0] * self.num_classes
        chunk = mc.chunk_size_for(
            samples, max(1, min(self.max_chunk, self.chunk_elements // per_sample))
        )
        if key is None:
            key = self.make_rng("noise") if self.stochastic else jax.random.PRNGKey(0)
        if mode in ("log_likelihood", "mean_log_likelihood") and labels is None:
            raise ValueError(f"mode={mode!r} needs labels.")
        if mode in ("log_likelihood", "mean_log_likelihood") and samples == 1:
            # Nothing to average: one plain computation, which the compiler can simplify as a
            # whole (the streamed and one-pass machinery cost 1.2x at S = 1, K = 29,593). Both
            # modes draw as the streamed mode does, one key for the batch (one key per example,
            # as the one-pass mode draws S > 1, cost 2% at K = 1,000 on the 2-core CPU).
            logits = logits_fn(params, mc.chunk_keys(key, 1)[0], 1)
            log_likelihood = likelihood.samples_log_likelihood(self.form, logits, labels)
            return log_likelihood if mode == "log_likelihood" else log_likelihood.mean()
        per_device_examples = min(
            self.chunk_elements // (samples * self.num_classes),
            max(1, self.max_block_rows // samples),
        )
        if mode == "mean_log_likelihood" and self.one_pass_mean and per_device_examples >= 1:
            block = fused.examples_per_block(phi.shape[0], per_device_examples, jax.device_count())
            block_fn, params = self.one_pass_block(logits_fn, params, labels, samples)
            shared = {k: v for k, v in params.items() if k not in self.per_example_params}
            per_example = {k: v for k, v in params.items() if k in self.per_example_params}
            return likelihood.mc_mean_log_likelihood(
                block_fn,
                shared,
                per_example,
                labels,
                key,
                samples,
                block,
            )
        if mode in ("log_likelihood", "mean_log_likelihood"):
            log_likelihood = likelihood.mc_log_likelihood(
                self.form, logits_fn, params, labels, key, samples, chunk
            )
            return log_likelihood if mode == "log_likelihood" else log_likelihood.mean()
        if mode == "probs":
            return likelihood.mc_probabilities(self.form, logits_fn, params, key, samples, chunk)
        return likelihood.mc_sample_probabilities(self.form, logits_fn, params, key, samples, chunk)


class HeteroscedasticHead(Head):
    """What HET and HET-XL share: low-rank + diagonal noise and a temperature.

    Attributes:
      num_factors: R, rank of the low-rank part of the noise covariance.
      temperature: the fixed tau, or unused when learned.
      learn_temperature: learn tau in `temperature_bounds` (HET-XL) instead of fixing it (HET).
      min_scale: floor of the diagonal noise standard deviation.
    """

    num_factors: int = 50
    temperature: float = 1.0
    learn_temperature: bool = False
    temperature_bounds: tuple[float, float] = (0.05, 5.0)
    min_scale: float = 1e-3

    def noise_and_temperature(self, phi: jax.Array, dim: int, axis_name: str) -> dict:
        """{"factors": J [R, dim], "scale": v [B, dim], "diag": d [B, dim], "temperature": tau}."""
        factors, scale, diag = LowRankNoise(
            dim,
            self.num_factors,
            self.min_scale,
            axis_name=axis_name,
            dtype=self.dtype,
            name="noise",
        )(phi)
        tau = Temperature(
            self.temperature, self.learn_temperature, self.temperature_bounds, name="temperature"
        )()
        return {"factors": factors, "scale": scale, "diag": diag, "temperature": tau}
