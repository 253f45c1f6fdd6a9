"""Two formulations that XLA:CPU runs far faster than the plain ones (measured on the 2-core CPU).

- `sum_over_samples`: a sum over a major axis ([B, S, M] -> [B, M]) as a product with ones;
  XLA:CPU's reduction over it is 20-30x slower, worst with an elementwise product fused in.
- `written_once`: an array every consumer reads from memory. XLA:CPU fuses cheap elementwise
  producers (the polynomial tail of jax.random.normal) into every consumer, and a consumer that
  transposes then recomputes them reading its inputs across their rows (45 ms for a
  1000 x 1024 noise draw, where transposing the written array takes 3 ms). An optimisation
  barrier does not stop that fusion; the outputs of a conditional are always materialised.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sum_over_samples(values: jax.Array) -> jax.Array:
    """[B, S, M] -> [B, M]: the sum over axis 1."""
    if values.shape[1] == 1:  # one sample: nothing to sum (a product over 1 ran at 59 ms)
        return values[:, 0]
    ones = jnp.ones((values.shape[1],), values.dtype)
    return jnp.einsum("bsm,s->bm", values, ones)


def written_once(values: jax.Array, valid: jax.Array) -> jax.Array:
    """`values` where the scalar `valid` holds, else NaN, as the output of a conditional (on
    the CPU backend; elsewhere `values` itself). `valid` is a check the caller would fail
    anyway (a positive temperature or scale): the conditional needs a predicate XLA cannot
    fold, and NaN is what an invalid input should produce."""
    if jax.default_backend() != "cpu":
        return values
    return jax.lax.cond(valid, lambda x: x, lambda x: jnp.full_like(x, jnp.nan), values)
