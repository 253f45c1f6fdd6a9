"""The attention the towers use equals flax's reference dot-product attention."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from towers.common import fused_attention


def test_fused_attention_equals_flax_reference_with_and_without_mask():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    query = jax.random.normal(keys[0], (2, 5, 3, 8))
    key = jax.random.normal(keys[1], (2, 7, 3, 8))
    value = jax.random.normal(keys[2], (2, 7, 3, 8))
    mask = np.ones((2, 1, 5, 7), bool)
    mask[1, :, :, 4:] = False  # the second example's last three keys are padding
    for m in (None, mask):
        np.testing.assert_allclose(
            fused_attention(query, key, value, mask=m),
            nn.dot_product_attention(query, key, value, mask=m),
            rtol=1e-5,
            atol=1e-5,
        )
    with pytest.raises(ValueError, match="dropout"):
        fused_attention(query, key, value, dropout_rate=0.1)
