"""Tests for resnet_jax.train and the `python -m resnet_jax.main` entry point."""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import benchmark
from resnet_jax import configlib
from resnet_jax import errors
from resnet_jax import metric_writers
from resnet_jax import parallel
from resnet_jax import specs
from resnet_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_setup(**overrides):
  """A CIFAR ResNet-8 (n=1) with 10 classes on 16x16 synthetic images."""
  config = configlib.load(os.path.join(REPO, 'configs/fake_data.py:model=cifar20'), {
      'model.depth': 8, 'image_size': 16, 'batch_size': 32, 'warmup_steps': 0,
      'num_train_steps': 100, **overrides})
  return train.setup_experiment(specs.resolve(config))


def _batch(exp, n, seed=0):
  rng = np.random.RandomState(seed)
  local = {'image': rng.randint(0, 256, (n, 16, 16, 3)).astype(np.uint8),
           'label': rng.randint(0, 10, (n,)).astype(np.int32)}
  return parallel.shard_batch(local, exp.mesh)


def test_tiny_model_overfits_a_fixed_batch():
  exp = _tiny_setup(learning_rate=3e-3)
  step = exp.train_step()
  state = exp.init_state()
  batch = _batch(exp, 32)
  losses = []
  for _ in range(40):
    state, metrics = step(state, batch)
    losses.append(float(metrics['train_loss']))
  assert losses[-1] < 0.25 * losses[0], losses
  assert float(metrics['train_top1']) == 1.0
  assert int(state.step) == 40
  # The state stays replicated (no leading device axis), as it came in.
  assert state.params['head']['fc']['kernel'].shape == (64, 10)
  assert state.params['head']['fc']['kernel'].sharding == parallel.replicated(exp.mesh)


def test_the_compiled_train_step_runs_without_compiling_again():
  exp = _tiny_setup()
  compiled = exp.compile_train_step()
  state = exp.init_state()
  with benchmark.count_compiles() as compiles:
    for seed in range(3):
      state, _ = compiled(state, _batch(exp, 32, seed))
    jax.block_until_ready(state)
  assert compiles == []


def test_cross_entropy_with_label_smoothing_and_topk():
  logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
  labels = jnp.array([1, 2])
  plain = train.cross_entropy_loss(logits, labels, 3)
  expected = -jax.nn.log_softmax(logits)[jnp.arange(2), labels]
  np.testing.assert_allclose(plain, expected, rtol=1e-6)
  smooth = train.cross_entropy_loss(logits, labels, 3, label_smoothing=0.3)
  targets = jax.nn.one_hot(labels, 3) * 0.7 + 0.1
  np.testing.assert_allclose(smooth, -(targets * jax.nn.log_softmax(logits)).sum(-1),
                             rtol=1e-6)
  np.testing.assert_array_equal(train.correct_topk(logits, labels, 1), [0.0, 1.0])
  np.testing.assert_array_equal(train.correct_topk(logits, labels, 2), [1.0, 1.0])


# Runs in a subprocess with 8 virtual devices: one SGD step on the same global
# batch over the first n devices (n = 1, 8; a mesh of n devices), and over 8
# devices with BatchNorm in groups of 2 ("ghost" BatchNorm).
_EIGHT_DEVICE_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import test_train as t
    from resnet_jax import parallel
    assert jax.device_count() == 8, jax.devices()
    overrides = {{'optimizer': 'sgd', 'learning_rate': 0.1, 'weight_decay': 1e-4}}
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
    out = {{}}
    for n, group in ((1, 0), (8, 0), (8, 2)):
      parallel.mesh_devices = lambda: jax.devices()[:n]
      exp = t._tiny_setup(**{{**overrides, 'model.bn_group_size': group}})
      state = exp.init_state()
      start = parallel.to_host(state)
      new, metrics = exp.train_step()(state, t._batch(exp, 32))
      new = parallel.to_host(new)
      out[n, group] = (new.params, new.batch_stats, float(metrics['train_loss']))
    one, eight, ghost = out[1, 0], out[8, 0], out[8, 2]
    # Ghost BatchNorm, computed directly: each group of 2 devices normalises
    # over its own 8 examples; the running mean becomes the mean of the groups.
    images = np.asarray(t._batch(exp, 32)['image'], np.float32)
    print(json.dumps({{
        'params_max_diff': float(np.max(np.abs(flat(one[0]) - flat(eight[0])))),
        'params_max_change': float(np.max(np.abs(flat(one[0]) - flat(start.params)))),
        'stats_max_diff': float(np.max(np.abs(flat(one[1]) - flat(eight[1])))),
        'stats_max_change': float(np.max(np.abs(flat(one[1]) - flat(start.batch_stats)))),
        'loss': [one[2], eight[2], ghost[2]],
        'ghost_params_diff': float(np.max(np.abs(flat(one[0]) - flat(ghost[0])))),
    }}))
''')


def test_one_device_update_equals_eight_device_update():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  script = _EIGHT_DEVICE_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, '-c', script], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  # The update really moved the weights and statistics ...
  assert result['params_max_change'] > 1e-3
  assert result['stats_max_change'] > 1e-3
  # ... by the same amount on 1 and on 8 devices.
  assert result['params_max_diff'] < 1e-5, result
  assert result['stats_max_diff'] < 1e-5, result
  assert result['loss'][0] == pytest.approx(result['loss'][1], rel=1e-5)
  # BatchNorm over groups of 2 devices is another function of the same batch.
  assert result['ghost_params_diff'] > 1e-4, result
  assert result['loss'][2] != pytest.approx(result['loss'][0], rel=1e-4)


def _run_main(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'resnet_jax.main', *args], env=env,
                        cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('override,message', [
    ('--config.model.shortcut=E', 'shortcut'),
    ('--config.model.depth=21', '6n+2'),
    ('--config.batch_size=30', 'batch_size=30 must be a multiple of the number of devices, 8'),
    ('--config.learning_rate=-0.1', 'learning_rate=-0.1 must be positive'),
])
def test_bad_values_exit_nonzero_with_a_one_line_reason(tmp_path, override, message):
  extra = ['--xla_force_host_platform_device_count=8'] if 'batch' in override else []
  env_flags = ' '.join(extra)
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=env_flags)
  proc = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.main', '--config=configs/fake_data.py:model=cifar20',
       f'--workdir={tmp_path}', override], env=env, cwd=REPO, capture_output=True,
      text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr


def test_unknown_field_is_rejected_at_flag_parsing(tmp_path):
  proc = _run_main('--config=configs/fake_data.py:model=cifar20', f'--workdir={tmp_path}',
                   '--config.model.dept=18')
  assert proc.returncode != 0
  assert 'dept' in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_main_end_to_end_on_a_folder(tmp_path):
  """main on a folder dataset writes metrics.jsonl, TensorBoard events and the config."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from test_data import write_folder  # pylint: disable=g-import-not-at-top
  write_folder(str(tmp_path / 'src'), {'train': 64, 'test': 40}, size=32)
  workdir = str(tmp_path / 'run')
  argv = ['--config=configs/cifar10.py:depth=8', f'--workdir={workdir}',
          '--config.batch_size=16', '--config.num_train_steps=6',
          '--config.warmup_steps=0', '--config.log_every_steps=2',
          '--config.eval_every_steps=3', '--config.num_eval_batches=2',
          '--config.checkpoint_every_steps=100', '--config.model.shortcut=B',
          f'--config.dataset=folder:{tmp_path / "src"}', f'--config.data_dir={tmp_path / "d"}']
  proc = _run_main(*argv)
  assert proc.returncode == 0, proc.stderr[-3000:]

  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)
  assert saved['model']['shortcut'] == 'B' and saved['model']['depth'] == 8
  assert saved['num_train_steps'] == 6 and saved['num_classes'] == 2
  assert saved['image_size'] == 32 and len(saved['mean']) == len(saved['std']) == 3
  with open(os.path.join(workdir, 'dataset.json')) as f:
    dataset = json.load(f)
  assert dataset['class_names'] == ['cat', 'dog'] and dataset['num_train'] == 64
  assert dataset['mean'] == saved['mean']

  rows = metric_writers.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  train_rows = [r for r in rows if 'train_loss' in r]
  eval_rows = [r for r in rows if 'eval_top1' in r]
  assert [r['step'] for r in eval_rows] == [3, 6]
  # Logged every 2 steps, after the first step, and before each evaluation.
  assert [r['step'] for r in train_rows] == [1, 2, 3, 4, 6]
  assert {'train_loss', 'train_top1', 'lr', 'images_per_sec'} <= set(train_rows[-1])
  assert {'eval_loss', 'eval_top1', 'eval_top5'} <= set(eval_rows[-1])
  assert all(r['eval_count'] == 32 for r in eval_rows)  # 2 batches of 16.
  events = os.listdir(os.path.join(workdir, 'tensorboard'))
  assert any(e.startswith('events.out.tfevents') for e in events)


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path, monkeypatch, fast_compile):
  """A loss that turns NaN stops the run with the step in the message, unsaved."""
  del fast_compile
  finite_loss = train.cross_entropy_loss

  def nan_loss(logits, labels, num_classes, label_smoothing=0.0):
    return finite_loss(logits, labels, num_classes, label_smoothing) * jnp.nan

  config = configlib.load(os.path.join(REPO, 'configs/fake_data.py:model=cifar20'), {
      'model.depth': 8, 'image_size': 16, 'batch_size': 8, 'num_classes': 10,
      'num_train_steps': 12, 'log_every_steps': 4, 'checkpoint_every_steps': 1,
      'eval_every_steps': 100})
  with pytest.raises(errors.NonFiniteLossError, match=r'loss became nan at step \d+'
                     ) as error:
    with monkeypatch.context() as m:
      m.setattr(train, 'cross_entropy_loss', nan_loss)
      train.train_and_evaluate(config, str(tmp_path))
  # Found at the first step's sync, before any checkpoint of the broken state.
  assert re.search(r'at step (\d+)', str(error.value)).group(1) == '1'
  assert not [d for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit()]
