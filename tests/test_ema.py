"""resnet_jax.ema against timm 1.0.31's ModelEmaV3 (fixtures from experiments/recipe_parity.py)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import ema
from resnet_jax.errors import ConfigError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'recipes')


@pytest.fixture(scope='module')
def fx():
  with open(os.path.join(FIXTURES, 'ema.json')) as f:
    meta = json.load(f)
  return dict(np.load(os.path.join(FIXTURES, 'ema.npz'))), meta


def test_decay_schedule_matches_timms_get_decay(fx):
  _, meta = fx
  for name, kwargs in meta['decay_specs'].items():
    spec = ema.EmaSpec(**kwargs)
    want = np.array(meta['decays'][name])
    got = jax.jit(jax.vmap(lambda s, spec=spec: ema.ema_decay(s, spec)))(
        jnp.arange(len(want)))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)
    # The first update(s) copy the model.
    first = 1 + spec.update_after_step
    np.testing.assert_array_equal(got[:first + 1], 0.0)
    assert got[first + 1] > 0
  # The tables exercise the warmup ramp and both clamps.
  clamped = np.array(meta['decays']['warmup_clamped'])
  assert np.isclose(clamped[12], 0.5) and np.isclose(clamped[-1], 0.99)
  assert 0.5 < clamped[20] < 0.99


def test_thirty_steps_match_model_ema_v3_weights_and_batchnorm_buffers(fx):
  arrays, meta = fx
  keys = meta['keys']
  assert '1.running_mean' in keys and '1.num_batches_tracked' in keys
  update = jax.jit(ema.update_ema)
  for name, kwargs in meta['specs'].items():
    spec = ema.EmaSpec(**kwargs)
    state = ema.init_ema({k: arrays[f'model/{k}'][0] for k in keys})
    for step in range(1, meta['steps'] + 1):
      model = {k: arrays[f'model/{k}'][step] for k in keys}
      state = update(state, model, ema.ema_decay(step, spec))
      for k in keys:
        want = arrays[f'ema/{name}/{k}'][step - 1]
        np.testing.assert_allclose(state[k], want, rtol=1e-6, atol=1e-6,
                                   err_msg=f'{name} {k} step {step}')
    # Running statistics are averaged (not copied); the step counter is copied.
    assert not np.allclose(state['1.running_var'], arrays['model/1.running_var'][-1])
    assert state['1.num_batches_tracked'] == meta['steps']


def test_a_flax_tree_is_averaged_whole_and_stays_float32():
  params = {'params': {'conv': {'kernel': jnp.ones((3, 3), jnp.bfloat16)}},
            'batch_stats': {'bn': {'mean': jnp.zeros(3), 'var': jnp.ones(3)}}}
  state = ema.init_ema(params)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))
  moved = jax.tree.map(lambda x: x + 1, params)
  out = jax.jit(ema.update_ema)(state, moved, 0.75)
  assert jax.tree.structure(out) == jax.tree.structure(state)
  np.testing.assert_allclose(out['params']['conv']['kernel'], 1.25)
  np.testing.assert_allclose(out['batch_stats']['bn']['mean'], 0.25)
  np.testing.assert_allclose(out['batch_stats']['bn']['var'], 1.25)


def test_float32_accumulation_keeps_updates_that_bfloat16_would_lose():
  # With decay 0.9999 each update moves the average by 1e-4 * (model - ema):
  # below bfloat16's resolution at 1.0, kept by the float32 copy.
  model = {'w': jnp.full((4,), 1.5, jnp.bfloat16)}
  state = ema.init_ema({'w': jnp.ones((4,), jnp.bfloat16)})
  for _ in range(10):
    state = ema.update_ema(state, model, 0.9999)
  np.testing.assert_allclose(state['w'], 1 + 0.5 * (1 - 0.9999 ** 10), rtol=1e-5)


@pytest.mark.parametrize('kwargs,match', [
    (dict(decay=1.5), r'decay=1.5 must be in \[0, 1\]'),
    (dict(min_decay=-0.1), r'min_decay=-0.1 must be in \[0, 1\]'),
    (dict(decay=0.9, min_decay=0.95), 'min_decay=0.95 must be <= decay=0.9'),
    (dict(update_after_step=-1), 'update_after_step=-1 must be an integer >= 0'),
    (dict(warmup_gamma=0.0), 'warmup_gamma=0.0 must be > 0'),
    (dict(warmup_power=-1.0), 'warmup_power=-1.0 must be > 0'),
    (dict(use_warmup='yes'), "use_warmup='yes' must be True or False"),
])
def test_bad_settings_raise_a_one_line_config_error(kwargs, match):
  with pytest.raises(ConfigError, match=match) as err:
    ema.EmaSpec(**kwargs)
  assert '\n' not in str(err.value)
