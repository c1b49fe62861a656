"""Tests for resnet_jax.optim: schedules, weight-decay masking, optimizer choice,
LAMB and LARS against timm 1.0.31 (fixtures from experiments/optim_parity.py),
gradient accumulation."""

import json
import os

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import configlib
from resnet_jax import models
from resnet_jax import optim
from resnet_jax import specs
from resnet_jax.errors import ConfigError

BASE = 'configs/cifar10.py'
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'optim')


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


@pytest.mark.parametrize('overrides,match', [
    ({'learning_rate': -0.1}, 'learning_rate=-0.1 must be positive'),
    ({'schedule': 'linear'}, 'valid schedules: constant, piecewise, cosine'),
    ({'optimizer': 'rmsprop'}, 'valid optimizers: adam, adamw, sgd, nesterov, lamb, lars'),
    ({'weight_decay_type': 'l1'}, 'valid: l2, decoupled'),
    ({'optimizer': 'lamb', 'weight_decay_type': 'decoupled'},
     "does not apply to lamb: .* leave weight_decay_type='l2'"),
    ({'momentum': 1.0}, r'momentum=1.0 must be in \[0, 1\)'),
    ({'beta2': -0.5}, r'beta2=-0.5 must be in \[0, 1\)'),
    ({'eps': -1e-8}, 'eps=-1e-08 must be >= 0'),
    ({'lamb_max_grad_norm': -1.0}, 'lamb_max_grad_norm=-1.0 must be >= 0'),
    ({'lars_trust_coefficient': 0.0}, 'lars_trust_coefficient=0.0 must be positive'),
    ({'grad_accumulation_steps': 0}, 'grad_accumulation_steps=0 must be an integer >= 1'),
])
def test_bad_values_are_one_line_config_errors(overrides, match):
  config = _config(**overrides)
  with pytest.raises(ConfigError, match=match) as error:
    optim.resolve(config)
  assert '\n' not in str(error.value)
  with pytest.raises(ConfigError, match=match):  # The one check every command runs.
    specs.resolve(config)


def test_accumulation_must_divide_each_devices_examples():
  with pytest.raises(ConfigError, match='grad_accumulation_steps=3 must divide the 128 '
                     'examples each device gets'):
    specs.resolve(_config(grad_accumulation_steps=3, batch_size=128))
  with pytest.raises(ConfigError, match='dtype=float16 is not supported'):
    specs.resolve(_config(grad_accumulation_steps=2, dtype='float16'))


def test_eps_unset_is_the_optimizers_own_default():
  assert optim.resolve(_config(optimizer='lamb')).eps == 1e-6  # timm's Lamb.
  assert optim.resolve(_config(optimizer='adam')).eps == 1e-8  # torch's and optax's.
  assert optim.resolve(_config(optimizer='lamb', eps=1e-8)).eps == 1e-8


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


# --- LAMB and LARS against timm --------------------------------------------------


def _fixtures():
  with open(os.path.join(FIXTURES, 'timm.json'), encoding='utf-8') as f:
    meta = json.load(f)
  return meta, np.load(os.path.join(FIXTURES, 'timm.npz'))


META, ARRAYS = _fixtures()


def _tree(prefix, step=None):
  return traverse_util.unflatten_dict(
      {tuple(p.split('/')): ARRAYS[f'{prefix}/{p}'] if step is None
       else ARRAYS[f'{prefix}/{p}'][step] for p in META['paths']})


@pytest.mark.parametrize('case', sorted(META['cases']))
def test_lamb_and_lars_match_timm_step_by_step(case):
  """timm's create_optimizer_v2(model, 'lamb' | 'lars', ...) over ten gradients."""
  c = META['cases'][case]
  spec = optim.resolve(configlib.load(BASE, c['config']))
  lrs = jnp.asarray(c['lrs'])
  tx = optim.create_optimizer(spec, lambda n: lrs[n])
  params = _tree('init')
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(META['steps']):
    updates, state = update(_tree('grads', step), state, params)
    params = optax.apply_updates(params, updates)
    got = traverse_util.flatten_dict(params, sep='/')
    for path in META['paths']:
      # The generator's tolerance: float32 rounding (its RTOL says where from).
      np.testing.assert_allclose(got[path], ARRAYS[f'{case}/{path}'][step],
                                 rtol=META['rtol'], atol=META['atol'],
                                 err_msg=f'{case} step {step + 1} {path}')


def test_kernel_mask_is_timms_weight_decay_group():
  """timm decays what is more than 1-d and not a bias: our kernels, in every ResNet."""
  mask = traverse_util.flatten_dict(optim.kernel_mask(_tree('init')), sep='/')
  assert sorted(p for p, m in mask.items() if m) == META['decayed_paths']
  for name, extra in (('seresnet18', {}), ('resnetrs50', {}), ('cifar_resnet20', {}),
                      ('resnet18', {'norm': 'group', 'num_groups': 8})):
    model_config = configlib.load('configs/base.py').model
    model_config.name = name
    for key, value in extra.items():
      model_config[key] = value
    model = models.create_model(model_config, num_classes=10)
    params = jax.eval_shape(lambda m=model: m.init(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))['params']
    flat = traverse_util.flatten_dict(params)
    mask = traverse_util.flatten_dict(optim.kernel_mask(params))
    timm_rule = {k: len(v.shape) > 1 and k[-1] != 'bias' for k, v in flat.items()}
    assert model.spec.label == name and mask == timm_rule, name


# --- Gradient accumulation ---------------------------------------------------------
