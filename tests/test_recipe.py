"""The recipe parts wired into the train step: Mixup/CutMix, BCE, EMA, distillation,
drop path, gradient accumulation. Each part's own function is checked against
timm/optax/the paper in its module's tests; these check the step uses it right.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import configlib
from resnet_jax import ema as ema_lib
from resnet_jax import evaluate
from resnet_jax import losses
from resnet_jax import parallel
from resnet_jax import recipe as recipe_lib
from resnet_jax import specs
from resnet_jax import train
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {'model.depth': 8, 'image_size': 16, 'batch_size': 16, 'eval_batch_size': 16,
        'num_classes': 10, 'warmup_steps': 0, 'num_train_steps': 100, 'augment': 'none'}

pytestmark = pytest.mark.usefixtures('fast_compile')


def setup(**overrides):
  config = configlib.load(os.path.join(REPO, 'configs/fake_data.py:model=cifar20'),
                          {**TINY, **overrides})
  return train.setup_experiment(specs.resolve(config))


def batch(exp, seed=0):
  rng = np.random.RandomState(seed)
  local = {'image': rng.randint(0, 256, (16, 16, 16, 3)).astype(np.uint8),
           'label': rng.randint(0, 10, (16,)).astype(np.int32)}
  return parallel.shard_batch(local, exp.mesh)


def test_with_every_part_off_the_loss_is_the_plain_cross_entropy():
  logits = jax.random.normal(jax.random.key(0), (6, 10))
  labels = jnp.arange(6)
  plain = recipe_lib.RecipeSpec(label_smoothing=0.1)
  assert plain.plain and setup().run.recipe == recipe_lib.RecipeSpec()
  np.testing.assert_array_equal(
      train.example_loss(logits, labels, None, None, 10, plain),
      train.cross_entropy_loss(logits, labels, 10, 0.1))
  bce = recipe_lib.RecipeSpec(loss='bce', label_smoothing=0.1, bce_target_threshold=0.2)
  np.testing.assert_array_equal(
      train.example_loss(logits, labels, None, None, 10, bce),
      losses.binary_cross_entropy(logits, labels, smoothing=0.1, target_threshold=0.2))


def test_the_ema_is_timms_rule_over_the_steps_and_is_evaluated_beside_the_weights():
  exp = setup(ema_decay=0.9, ema_warmup=True)
  state = exp.init_state()
  step = exp.train_step(donate=False)
  expected = ema_lib.init_ema(parallel.to_host(
      {'params': state.params, 'batch_stats': state.batch_stats}))
  for i in range(3):
    state, _ = step(state, batch(exp, i))
    host = parallel.to_host({'params': state.params, 'batch_stats': state.batch_stats})
    expected = ema_lib.update_ema(expected, host, ema_lib.ema_decay(i + 1, exp.run.recipe.ema))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               parallel.to_host(state.ema), expected)
  metrics = train.evaluate(exp.eval_step(), state, [
      {**batch(exp, 9), 'mask': parallel.shard_batch(np.ones(16, bool), exp.mesh)}])
  assert {'eval_top1', 'eval_ema_top1', 'eval_ema_loss', 'eval_count'} <= set(metrics)
  assert metrics['eval_ema_loss'] != metrics['eval_loss']


def test_accumulation_equals_one_step_on_the_whole_batch_without_batchnorm():
  results = []
  for k in (1, 4):
    exp = setup(grad_accumulation_steps=k, optimizer='sgd', learning_rate=0.5,
                **{'model.norm': 'group', 'model.num_groups': 4})
    state, _ = exp.train_step(donate=False)(exp.init_state(), batch(exp))
    results.append(parallel.to_host(state.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), *results)
  with pytest.raises(ConfigError, match='grad_accumulation_steps=3 must divide'):
    setup(grad_accumulation_steps=3)


def test_drop_path_draws_from_the_step_key_in_training_only():
  exp = setup(**{'model.drop_path_rate': 0.5, 'model.dropout_rate': 0.2})
  state = exp.init_state()
  step = exp.train_step(donate=False)
  losses_ = [float(step(state, batch(exp))[1]['train_loss']) for _ in range(2)]
  assert losses_[0] == losses_[1]  # A function of (seed, step): resumable.
  plain = setup()
  assert float(plain.train_step(donate=False)(plain.init_state(), batch(plain))[1][
      'train_loss']) != losses_[0]
  # Evaluation is deterministic: no masks.
  mask = {'mask': parallel.shard_batch(np.ones(16, bool), exp.mesh)}
  evals = [train.evaluate(exp.eval_step(), state, [{**batch(exp), **mask}])['eval_loss']
           for _ in range(2)]
  assert evals[0] == evals[1]


def test_distillation_runs_the_teacher_in_the_step(tmp_path):
  teacher_dir = str(tmp_path / 'teacher')
  config = configlib.load(os.path.join(REPO, 'configs/fake_data.py:model=cifar20'), {
      **TINY, 'num_train_steps': 1, 'eval_every_steps': 1, 'num_eval_batches': 1,
      'checkpoint_every_steps': 1})
  train.train_and_evaluate(config, teacher_dir)
  plain, taught = setup(), setup(teacher=teacher_dir, distill_temperature=2.0)
  assert taught.teacher is not None
  loss = lambda exp: float(exp.train_step(donate=False)(
      exp.init_state(), batch(exp), *exp.step_args())[1]['train_loss'])
  # The teacher's cross-entropy term is positive: the loss grows by it.
  assert loss(taught) > loss(plain) + 1e-3
  with pytest.raises(ConfigError, match='distillation needs the same classes'):
    setup(teacher=teacher_dir, num_classes=12)


def test_evaluate_and_warm_starts_select_the_ema(tmp_path):
  workdir = str(tmp_path / 'run')
  config = configlib.load(os.path.join(REPO, 'configs/fake_data.py:model=cifar20'), {
      **TINY, 'num_train_steps': 3, 'eval_every_steps': 3, 'num_eval_batches': 2,
      'checkpoint_every_steps': 3, 'ema_decay': 0.5})
  result = train.train_and_evaluate(config, workdir)
  raw = evaluate.evaluate_checkpoint(None, workdir, num_batches=2)
  ema = evaluate.evaluate_checkpoint(None, workdir, num_batches=2, ema=True)
  assert raw['eval_top1'] == pytest.approx(result['eval_top1'])
  assert ema['eval_loss'] == pytest.approx(result['eval_ema_loss'], rel=1e-5)
  other = str(tmp_path / 'plain')
  train.train_and_evaluate(configlib.load(os.path.join(
      REPO, 'configs/fake_data.py:model=cifar20'), {**TINY, 'num_train_steps': 1,
                                                   'num_eval_batches': 1}), other)
  with pytest.raises(ConfigError, match='holds no EMA weights'):
    evaluate.evaluate_checkpoint(None, other, num_batches=1, ema=True)


# One step of the whole recipe (Mixup/CutMix over the global batch, BCE with a
# threshold, label smoothing, EMA) on 1 device and on 8: the same state (SGD:
# Adam would magnify the reduction-order rounding of near-zero gradients).
_EIGHT = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import test_recipe as t
    from resnet_jax import parallel
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
    out = []
    for n in (1, 8):
      parallel.mesh_devices = lambda: jax.devices()[:n]
      for mix in ({{'mixup_alpha': 0.0, 'cutmix_alpha': 1.0}}, {{'mixup_alpha': 0.8}}):
        exp = t.setup(loss='bce', bce_target_threshold=0.2, label_smoothing=0.1,
                      optimizer='sgd', learning_rate=0.1,
                      ema_decay=0.9, mixup_prob=1.0, **mix)
        state, metrics = exp.train_step(donate=False)(exp.init_state(), t.batch(exp))
        state = parallel.to_host(state)
        out.append([flat(state.params), flat(state.ema), float(metrics['train_loss'])])
    print(json.dumps({{'params': max(float(np.max(np.abs(a[0] - b[0]))) for a, b in zip(out[:2], out[2:])),
                      'ema': max(float(np.max(np.abs(a[1] - b[1]))) for a, b in zip(out[:2], out[2:])),
                      'loss': [o[2] for o in out]}}))
''')


def test_the_recipe_step_is_the_same_on_1_and_8_devices(child_env):
  env = child_env(XLA_FLAGS='--xla_force_host_platform_device_count=8')
  script = _EIGHT.format(tests=os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, '-c', script], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['params'] < 1e-5 and result['ema'] < 1e-5, result
  one, eight = result['loss'][:2], result['loss'][2:]
  assert one == pytest.approx(eight, rel=1e-5), result
