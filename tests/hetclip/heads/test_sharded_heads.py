"""A head's class dimension sharded over a model mesh axis computes what one device computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from hetclip.heads import HetXLHead
from hetclip.sharding import make_mesh, place_params

NUM_CLASSES, DIM = 16, 8


@pytest.mark.parametrize("form", ["softmax", "sigmoid"])
def test_class_sharded_hetxl_head_equals_single_device(form):
    mesh = make_mesh({"data": 2, "model": 4})
    head = HetXLHead(num_classes=NUM_CLASSES, num_factors=3, form=form, num_samples=8)
    phi = jax.random.normal(jax.random.PRNGKey(0), (4, DIM))
    labels = (
        jnp.array([0, 5, 9, 15])
        if form == "softmax"
        else jax.nn.one_hot(jnp.array([0, 5, 9, 15]), NUM_CLASSES)
    )
    key = jax.random.PRNGKey(3)
    boxed = head.init({"params": jax.random.PRNGKey(1)}, phi, labels, key=key)
    params = nn.meta.unbox(boxed)
    sharded_params = place_params(boxed, mesh)
    kernel_spec = sharded_params["params"]["kernel"].sharding.spec
    assert tuple(kernel_spec) == (None, "model")  # [D, K]: classes split over 'model'

    def loss(params):
        return -head.apply(params, phi, labels, key=key).mean()

    value, grads = jax.value_and_grad(loss)(params)
    sharded_value, sharded_grads = jax.jit(jax.value_and_grad(loss))(sharded_params)
    np.testing.assert_allclose(sharded_value, value, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(sharded_grads), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    probs = jax.jit(lambda p: head.apply(p, phi, mode="probs", key=key))(sharded_params)
    np.testing.assert_allclose(probs, head.apply(params, phi, mode="probs", key=key), rtol=1e-5)


def test_class_sharded_one_pass_training_mode_equals_single_device():
    # The one-pass mode's fused softmax block (hetclip.heads.projected_softmax) with the kernel's
    # classes split over 'model' and the batch over 'data'.
    mesh = make_mesh({"data": 2, "model": 4})
    head = HetXLHead(num_classes=NUM_CLASSES, num_factors=3, num_samples=8)
    phi = jax.random.normal(jax.random.PRNGKey(0), (4, DIM))
    labels = jnp.array([0, 5, 9, 15])
    key = jax.random.PRNGKey(3)
    boxed = head.init({"params": jax.random.PRNGKey(1)}, phi, labels, key=key)
    params, sharded_params = nn.meta.unbox(boxed), place_params(boxed, mesh)

    def loss(params):
        return -head.apply(params, phi, labels, mode="mean_log_likelihood", key=key)

    value, grads = jax.value_and_grad(loss)(params)
    sharded_value, sharded_grads = jax.jit(jax.value_and_grad(loss))(sharded_params)
    np.testing.assert_allclose(sharded_value, value, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(sharded_grads), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
