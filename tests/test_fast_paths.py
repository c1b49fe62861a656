"""CPU fast paths (resnet_jax/models/fast_paths.py): the same values and gradients
as the plain layers."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models
from resnet_jax.models import fast_paths

SPECIAL = np.array([np.nan, -np.inf, -2.5, -1e-30, -0.0, 0.0, 1e-30, 3.0, np.inf], np.float32)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16, jnp.float64])
def test_relu_values_and_gradients_equal_flax_relu(dtype):
  with jax.enable_x64(dtype == jnp.float64):
    x = jnp.asarray(np.concatenate([SPECIAL, np.random.default_rng(0).normal(size=64)]), dtype)
    g = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), dtype)
    np.testing.assert_array_equal(jax.jit(fast_paths.relu)(x), nn.relu(x))
    grad = lambda f: jax.jit(jax.vjp(f, x)[1])(g)[0]
    np.testing.assert_array_equal(grad(fast_paths.relu), grad(nn.relu))
    # Forward mode too (a custom JVP): jvp, and so Hessian-vector products, work.
    tangent = lambda f: jax.jit(lambda x, g: jax.jvp(f, (x,), (g,))[1])(x, g)
    np.testing.assert_array_equal(tangent(fast_paths.relu), tangent(nn.relu))


def _tiny_cifar(shortcut, preact, fast, se_ratio=0.0):
  return models.create_model(
      {'family': 'cifar', 'depth': 8, 'base_width': 4, 'shortcut': shortcut,
       'preact': preact, 'se_ratio': se_ratio}, num_classes=3, cpu_fast_paths=fast)


def _loss_and_grads(model, variables, x, y):
  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                            mutable=['batch_stats'])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])
  return jax.jit(jax.value_and_grad(loss))(variables['params'])


@pytest.mark.parametrize('shortcut,preact,se_ratio', [
    ('A', False, 0.0), ('C', False, 0.0), ('B', True, 0.0),
    ('D', False, 0.25)])  # SE's inner activation is the fast relu too.
def test_model_gradients_equal_with_and_without_fast_paths(shortcut, preact, se_ratio,
                                                          fast_compile):
  del fast_compile
  fast, plain = (_tiny_cifar(shortcut, preact, f, se_ratio) for f in (True, False))
  # float64, where "equal to rounding" is sharp (float32 rounding differs with
  # fusion, and some of these gradients are zero up to rounding).
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3), jnp.float64)
    y = jnp.array([0, 1, 2, 1])
    fast, plain = fast.clone(dtype=jnp.float64), plain.clone(dtype=jnp.float64)
    variables = plain.init(jax.random.PRNGKey(1), x, train=False)
    # The same parameters (names, shapes) either way.
    assert (jax.tree.map(jnp.shape, fast.init(jax.random.PRNGKey(1), x, train=False))
            == jax.tree.map(jnp.shape, variables))
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
    (loss_f, grads_f), (loss_p, grads_p) = [
        _loss_and_grads(m, variables, x, y) for m in (fast, plain)]
  np.testing.assert_allclose(loss_f, loss_p, rtol=1e-13)
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads_p))
  for gf, gp in zip(jax.tree.leaves(grads_f), jax.tree.leaves(grads_p)):
    np.testing.assert_allclose(gf, gp, rtol=1e-10, atol=1e-12 * scale)


def test_fast_paths_follow_the_backend(monkeypatch):
  assert fast_paths.enabled(True) == (jax.default_backend() == 'cpu')
  assert not fast_paths.enabled(False)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert not fast_paths.enabled(True)
