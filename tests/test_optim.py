"""Tests for resnet_jax.optim: schedules, weight-decay masking, optimizer choice."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import configlib
from resnet_jax import optim
from resnet_jax import specs
from resnet_jax.errors import ConfigError

BASE = 'configs/cifar10.py'


def _config(**overrides):
  return configlib.load(BASE, {'warmup_steps': 0, **overrides})


def _schedule(config, steps_per_epoch: int):
  """The run's schedule, as train.setup_experiment builds it."""
  run = specs.resolve(config)
  return optim.create_learning_rate_schedule(
      run.optim, steps_per_epoch, run.loop.total_steps(steps_per_epoch))


def _optimizer(config):
  return optim.create_optimizer(optim.resolve(config), _schedule(config, 10))


def test_paper_schedule_divides_by_ten_at_32k_and_48k():
  config = configlib.load('configs/cifar10.py:recipe=paper')
  lr = _schedule(config, 351)
  assert specs.resolve(config).loop.total_steps(351) == 64_000
  np.testing.assert_allclose(
      [lr(0), lr(31_999), lr(32_000), lr(47_999), lr(48_000), lr(63_999)],
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_piecewise_boundaries_in_epochs_with_warmup():
  config = _config(schedule='piecewise', learning_rate=0.4, warmup_epochs=1.0,
                   lr_boundaries_epochs=(30.0, 60.0), num_epochs=90.0)
  lr = _schedule(config, 10)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(299), lr(300), lr(600)],
                             [0.0, 0.2, 0.4, 0.4, 0.04, 0.004], rtol=1e-6)


def test_cosine_with_warmup_peaks_then_decays_to_zero():
  config = _config(schedule='cosine', learning_rate=1.0, warmup_steps=10,
                   num_train_steps=110)
  lr = _schedule(config, 50)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)


def test_epochs_give_the_number_of_steps():
  total = lambda **o: specs.resolve(_config(**o)).loop.total_steps(40)
  assert total(num_train_steps=-1, num_epochs=2.5) == 100
  assert total(num_train_steps=7) == 7


@pytest.mark.parametrize('field,value,match', [
    ('learning_rate', -0.1, 'learning_rate=-0.1 must be positive'),
    ('schedule', 'linear', "valid schedules: constant, piecewise, cosine"),
    ('optimizer', 'rmsprop', 'valid optimizers: adam, adamw, sgd, nesterov'),
    ('weight_decay_type', 'l1', 'valid: l2, decoupled'),
])
def test_bad_values_name_the_valid_choices(field, value, match):
  config = _config(**{field: value})
  with pytest.raises(ConfigError, match=match):
    optim.resolve(config)
  with pytest.raises(ConfigError, match=match):  # The one check every command runs.
    specs.resolve(config)


def _params():
  return {'conv': {'kernel': jnp.ones((3, 3, 2, 2))},
          'bn': {'scale': jnp.ones((2,)), 'bias': jnp.ones((2,))},
          'head': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones((3,))}}


def test_weight_decay_touches_kernels_only():
  config = _config(optimizer='sgd', learning_rate=0.1, momentum=0.0, weight_decay=0.5)
  tx = _optimizer(config)
  params = _params()
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  # kernel: 1 - 0.1 * 0.5 * 1; scale and biases untouched.
  np.testing.assert_allclose(new['conv']['kernel'], 0.95)
  np.testing.assert_allclose(new['head']['kernel'], 0.95)
  np.testing.assert_allclose(new['bn']['scale'], 1.0)
  np.testing.assert_allclose(new['head']['bias'], 1.0)


def test_l2_goes_through_adam_but_decoupled_does_not():
  params = _params()
  grads = jax.tree.map(jnp.zeros_like, params)
  results = {}
  for kind in ('l2', 'decoupled'):
    config = _config(optimizer='adam', learning_rate=0.1, weight_decay=0.5,
                     weight_decay_type=kind)
    tx = _optimizer(config)
    updates, _ = tx.update(grads, tx.init(params), params)
    results[kind] = optax.apply_updates(params, updates)['conv']['kernel']
  # L2 through Adam: the decay gradient is normalised, so the step is ~lr.
  np.testing.assert_allclose(results['l2'], 1 - 0.1, rtol=1e-4)
  # Decoupled: lr * wd * w.
  np.testing.assert_allclose(results['decoupled'], 1 - 0.1 * 0.5, rtol=1e-6)


def test_nesterov_differs_from_heavy_ball_and_clipping_bounds_the_step():
  params = {'w': {'kernel': jnp.zeros((4,))}}
  grads = {'w': {'kernel': jnp.full((4,), 10.0)}}
  steps = {}
  for name in ('sgd', 'nesterov'):
    config = _config(optimizer=name, learning_rate=1.0, momentum=0.9)
    tx = _optimizer(config)
    updates, _ = tx.update(grads, tx.init(params))
    steps[name] = float(updates['w']['kernel'][0])
  assert steps['sgd'] == pytest.approx(-10.0)
  assert steps['nesterov'] == pytest.approx(-19.0)
  config = _config(optimizer='sgd', learning_rate=1.0, momentum=0.0, grad_clip_norm=1.0)
  tx = _optimizer(config)
  updates, _ = tx.update(grads, tx.init(params))
  assert float(jnp.linalg.norm(updates['w']['kernel'])) == pytest.approx(1.0, rel=1e-5)
