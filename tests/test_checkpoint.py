"""Tests for resnet_jax.checkpoint and the resume/preemption logic of the trainer.

Runs use the synthetic 'fake' dataset and a CIFAR ResNet-8 on 16x16 images, with
XLA's optimisations off (compilation dominates at this size). Runs whose results
are compared use the same settings.
"""

import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import flax
import jax
import numpy as np
from orbax.checkpoint._src.serialization import type_handlers
import pytest

from resnet_jax import checkpoint
from resnet_jax import errors
from resnet_jax import configlib
from resnet_jax import metric_writers
from resnet_jax import parallel
from resnet_jax import train
from resnet_jax import specs
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/fake_data.py:model=cifar20'
# batch_size 16 divides over 1 and 8 devices. Random crops and flips drawn inside
# the step from fold_in(rng, step): a resumed run must continue the RNG exactly.
TINY = {'model.depth': 8, 'image_size': 16, 'batch_size': 16, 'eval_batch_size': 16,
        'num_eval_batches': 2, 'log_every_steps': 1, 'warmup_steps': 0,
        'placement': 'device', 'augment': 'cifar'}


# Unoptimised XLA and a compilation cache shared with the subprocesses (child_env).
pytestmark = pytest.mark.usefixtures('compile_cache')


def tiny_config(**overrides):
  return configlib.load(os.path.join(REPO, CONFIG), {**TINY, **overrides})


def config_flags(**overrides) -> list[str]:
  return [f'--config={CONFIG}'] + [f'--config.{k}={v}' for k, v in
                                   {**TINY, **overrides}.items()]


def leaves_equal(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
      for x, y in zip(la, lb))


def toy_state(step: int) -> dict:
  """A small pytree with one array large enough to get a data file of its own."""
  rng = np.random.default_rng(step)
  return {'step': np.int32(step),
          'params': {'w': rng.standard_normal((200, 100)).astype(np.float32),
                     'b': np.full((7,), step, np.float32)}}


def toy_template() -> dict:
  return jax.tree.map(np.zeros_like, toy_state(0))


def manager(workdir, keep_checkpoints: int = 3) -> checkpoint.CheckpointManager:
  return checkpoint.CheckpointManager(str(workdir), keep=keep_checkpoints)


def save_toy(mngr, step, top1=None):
  mngr.save(step, toy_state(step), epoch=step / 10, metrics={'train_loss': 1.0 / step},
            best_metrics=None if top1 is None else {'eval_top1': top1})


# --- Round trip, retention -----------------------------------------------------


def test_save_restore_round_trip_of_a_train_state(tmp_path):
  exp = train.setup_experiment(specs.resolve(tiny_config()))
  fresh = exp.init_state()
  state = fresh.replace(step=jax.numpy.int32(5),
                        params=jax.tree.map(lambda x: x + 1.5, fresh.params))
  mngr = manager(tmp_path)
  mngr.save(5, state, epoch=0.25, metrics={'train_loss': 2.0, 'eval_top1': 0.5,
                                           'preempted': False},
            best_metrics={'eval_top1': 0.5})
  mngr.close()

  mngr = manager(tmp_path)
  restored, record = mngr.restore_latest(fresh)
  mngr.close()
  assert isinstance(restored, train.TrainState)
  for field in ('params', 'batch_stats', 'opt_state', 'rng', 'step'):
    assert leaves_equal(getattr(restored, field), getattr(state, field)), field
  # Host arrays: `parallel.replicate` puts them on any mesh.
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(restored.params))
  assert record['step'] == 5
  assert record['epoch'] == 0.25
  assert record['metrics'] == {'train_loss': 2.0, 'eval_top1': 0.5}
  assert record['device_count'] == jax.device_count()
  assert set(record['crc32']) == set(checkpoint.flatten(
      flax.serialization.to_state_dict(state)))


def test_keeps_the_last_k_and_the_best_across_restarts(tmp_path):
  mngr = manager(tmp_path, keep_checkpoints=2)
  # top-1 per step; None = not evaluated at that step.
  for step, top1 in [(1, 0.3), (2, 0.9), (3, None), (4, 0.5), (5, None), (6, 0.1)]:
    save_toy(mngr, step, top1)
  mngr.close()
  mngr = manager(tmp_path, keep_checkpoints=2)
  assert mngr.all_steps() == [2, 5, 6]  # Last two, and the best (0.9 at step 2).
  save_toy(mngr, 7)  # The best survives a restart: orbax re-reads the metrics.
  mngr.close()
  mngr = manager(tmp_path, keep_checkpoints=2)
  assert mngr.all_steps() == [2, 6, 7]
  save_toy(mngr, 8, top1=0.95)  # A new best replaces the old one.
  mngr.close()
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['7', '8']


def test_invalid_checkpoint_settings_are_config_errors():
  with pytest.raises(ConfigError, match='keep_checkpoints=0'):
    specs.resolve(tiny_config(keep_checkpoints=0))
  with pytest.raises(ConfigError, match='checkpoint_every_steps=0'):
    specs.resolve(tiny_config(checkpoint_every_steps=0))


# --- Corrupt checkpoints ---------------------------------------------------------


def _garble(path):
  data = bytearray(open(path, 'rb').read())
  middle = len(data) // 2
  for i in range(middle, min(middle + 64, len(data))):
    data[i] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(bytes(data))


def _corrupt(step_dir, how):
  files = [p for p in glob.glob(f'{step_dir}/**', recursive=True) if os.path.isfile(p)]
  if how == 'garbled data':  # Silent to orbax; caught by the CRC-32 check.
    _garble(max(files, key=os.path.getsize))
  elif how == 'truncated files':
    for p in files:
      if '/state/' in p:
        with open(p, 'r+b') as f:
          f.truncate(os.path.getsize(p) // 3)
  elif how == 'garbled metrics':  # Would stop orbax's manager from starting.
    _garble(os.path.join(step_dir, 'metrics', 'metrics'))
  elif how == 'empty directory':
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)


@pytest.mark.parametrize('how', ['garbled data', 'truncated files', 'garbled metrics',
                                 'empty directory'])
def test_corrupt_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, how):
  mngr = manager(tmp_path)
  for step in (1, 2, 3):
    save_toy(mngr, step, top1=0.1 * step)
  mngr.close()
  newest = str(tmp_path / 'checkpoints' / '3')
  _corrupt(newest, how)

  with caplog.at_level(logging.WARNING):
    mngr = manager(tmp_path)
    restored, record = mngr.restore_latest(toy_template())
  assert record['step'] == 2
  assert leaves_equal(restored, toy_state(2))
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert any(f'Skipping checkpoint {newest}' in w for w in warnings), warnings
  # Moved aside, not deleted; the step can be written again.
  assert os.path.isdir(newest.replace('/3', '/corrupt-3'))
  assert mngr.all_steps() == [1, 2]
  save_toy(mngr, 3)
  mngr.close()
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1', '2', '3', 'corrupt-3']


class _RaisesWhenCollected:
  def __init__(self, error):
    self.error = error

  def __del__(self):
    raise self.error


def test_the_reports_of_an_abandoned_read_are_dropped(tmp_path, monkeypatch, caplog):
  """What a truncated array file left on stderr besides the skip warning, by chance
  (the end-to-end case is in test_failures): each report is a traceback."""
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: seen.append(str(u.exc_value)))
  manager(tmp_path).close()  # Installs the filters.
  _RaisesWhenCollected(RuntimeError('Event loop is closed'))
  _RaisesWhenCollected(RuntimeError('something else'))
  assert seen == ['something else']
  for error in (ValueError('OUT_OF_RANGE: Error reading "a/0" in OCDBT database'),
                ValueError('a bug')):
    try:
      raise error
    except ValueError:
      logging.getLogger('asyncio').error('Task exception was never retrieved',
                                         exc_info=True)
  assert [str(r.exc_info[1]) for r in caplog.records] == ['a bug']


def test_a_failed_background_save_is_reported_at_once_and_the_previous_kept(
    tmp_path, monkeypatch):
  mngr = manager(tmp_path)
  save_toy(mngr, 1)
  mngr.wait()

  async def full_disk(*args):
    del args
    raise ValueError('RESOURCE_EXHAUSTED: Failed to write: No space left on device '
                     "[os_error_code='28']")

  monkeypatch.setattr(type_handlers.NumpyHandler, '_open_and_write', full_disk)
  save_toy(mngr, 2)
  deadline = time.monotonic() + 60
  while (failure := mngr.failure()) is None:  # No further save needed to learn it.
    assert time.monotonic() < deadline
    time.sleep(0.01)
  assert isinstance(failure, errors.OutOfSpaceError)
  message = str(failure)
  assert message.startswith('no space left on device: the checkpoint of step 2 could '
                            'not be written'), message
  assert f'The checkpoint of step 1 ({tmp_path / "checkpoints" / "1"}) is kept' in message
  assert 'rerun the same command to resume from step 1' in message
  assert os.listdir(tmp_path / 'checkpoints') == ['1']  # The partial step is gone.
  mngr.close()  # Reported once.
  monkeypatch.undo()
  mngr = manager(tmp_path)
  restored, record = mngr.restore_latest(toy_template())
  mngr.close()
  assert record['step'] == 1 and leaves_equal(restored, toy_state(1))


# --- Structure mismatches and warm starts ------------------------------------------


def test_restoring_into_another_architecture_names_the_mismatches(tmp_path):
  exp = train.setup_experiment(specs.resolve(tiny_config()))
  mngr = manager(tmp_path)
  mngr.save(1, exp.init_state(), epoch=0.0, metrics={})
  mngr.close()

  narrow = train.setup_experiment(
      specs.resolve(tiny_config(**{'model.base_width': 8}))).init_state()
  mngr = manager(tmp_path)
  with pytest.raises(ConfigError) as e:
    mngr.restore_latest(narrow)
  message = str(e.value)
  assert 'params/stage2/block1/conv1/kernel: checkpoint (3,3,16,32) vs model (3,3,8,16)' \
      in message
  assert str(tmp_path / 'checkpoints' / '1') in message
  assert mngr.all_steps() == [1]  # A mismatch is not corruption: nothing moved.

  deeper = train.setup_experiment(
      specs.resolve(tiny_config(**{'model.depth': 14}))).init_state()
  with pytest.raises(ConfigError) as e:
    mngr.restore_latest(deeper)
  assert 'missing in checkpoint: params/stage1/block2/conv1/kernel' in str(e.value)
  mngr.close()

  with pytest.raises(ConfigError, match='unexpected in checkpoint: '
                     'params/stage1/block2'):
    shallow_dir = tmp_path / 'deep'
    mngr = manager(shallow_dir)
    mngr.save(1, deeper, epoch=0.0, metrics={})
    mngr.close()
    checkpoint.load_weights(str(shallow_dir), exp.init_state().params,
                            exp.init_state().batch_stats)


def test_init_from_loads_weights_and_leaves_out_a_resized_head(tmp_path):
  source = train.setup_experiment(specs.resolve(tiny_config())).init_state()
  source = source.replace(params=jax.tree.map(lambda x: x + 1.0, source.params),
                          step=jax.numpy.int32(7))
  mngr = manager(tmp_path)
  mngr.save(7, source, epoch=0.0, metrics={})
  mngr.close()

  target = train.setup_experiment(specs.resolve(tiny_config(num_classes=7))).init_state()
  params, batch_stats = checkpoint.init_from(str(tmp_path), target, skip_head=True)
  assert leaves_equal(batch_stats, parallel.to_host(source.batch_stats))
  for key, value in checkpoint.flatten(params).items():
    expected = checkpoint.flatten(target.params if key.startswith('head/fc/')
                                  else source.params)[key]
    assert np.array_equal(value, expected), key
  with pytest.raises(ConfigError, match=r'params/head/fc/kernel: checkpoint '
                     r'\(64,10\) vs model \(64,7\)'):
    checkpoint.init_from(str(tmp_path / 'checkpoints' / '7'), target, skip_head=False)
  with pytest.raises(ConfigError, match='does not exist'):
    checkpoint.init_from(str(tmp_path / 'nowhere'), target)


# --- Resume, preemption, crashes (the training loop) ------------------------------


def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path):
  # Data order (4 distinct batches, cycled) and the augmentation RNG must both
  # continue exactly where the checkpoint left them.
  config = tiny_config(num_train_steps=6, checkpoint_every_steps=3, eval_every_steps=3)
  full, interrupted = tmp_path / 'full', tmp_path / 'interrupted'
  train.train_and_evaluate(config, str(full))
  # The interrupted run: the same run, crashed after its step-3 checkpoint.
  shutil.copytree(full, interrupted)
  shutil.rmtree(interrupted / 'checkpoints' / '6')
  result = train.train_and_evaluate(config, str(interrupted))
  assert result['step'] == 6

  rows = metric_writers.read_jsonl(str(interrupted / 'metrics.jsonl'))
  assert [r['step'] for r in rows if 'train_loss' in r][-3:] == [4, 5, 6]
  state_a, record_a = checkpoint.read_state(str(full))
  state_b, record_b = checkpoint.read_state(str(interrupted))
  assert record_a['step'] == record_b['step'] == 6
  assert {'step', 'params', 'batch_stats', 'opt_state', 'rng'} <= set(state_a)
  for key in state_a:
    assert leaves_equal(state_a[key], state_b[key]), key
  # Training moved the weights after step 3: the comparison is not trivial.
  state_3, _ = checkpoint.read_state(str(full / 'checkpoints' / '3'))
  assert not leaves_equal(state_3['params'], state_a['params'])


def _wait_for(predicate, proc, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if proc.poll() is not None:
      raise AssertionError('process exited early:\n' + proc.stderr.read()[-3000:])
    time.sleep(0.2)
  proc.kill()
  raise AssertionError('timed out')


def _train_rows(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  return [r for r in metric_writers.read_jsonl(path) if 'train_loss' in r]


# Runs main with orbax's commit (the atomic rename of the step directory) held
# back for one step, and says so in a marker file: a kill -9 then lands while
# that save is in progress.
_SLOW_COMMIT = textwrap.dedent('''
    import os, sys, time
    from orbax.checkpoint._src.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def slow_finalize(self):
      if os.path.basename(str(self.get_final())) == os.environ['SLOW_STEP']:
        with open(os.environ['MARKER'], 'w') as f:
          f.write(str(self.get()))
        time.sleep(600)
      return await finalize(self)
    atomicity.AtomicRenameTemporaryPath.finalize = slow_finalize
    from resnet_jax import cli, main
    sys.argv = ['main'] + sys.argv[1:]
    cli.run(main.main, main.define_flags)
''')


def test_kill_9_during_a_save_resumes_from_the_previous_checkpoint(tmp_path, caplog,
                                                                    child_env):
  workdir = str(tmp_path / 'run')
  marker = str(tmp_path / 'saving')
  overrides = {'num_train_steps': 6, 'checkpoint_every_steps': 2,
               'eval_every_steps': 100_000}
  proc = subprocess.Popen(
      [sys.executable, '-c', _SLOW_COMMIT, f'--workdir={workdir}',
       *config_flags(**overrides)],
      cwd=REPO, env=child_env(SLOW_STEP='4', MARKER=marker),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: os.path.exists(marker), proc)
  proc.kill()  # SIGKILL
  proc.communicate(timeout=60)
  names = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  assert names[0] == '2' and names[1].startswith('4.orbax-checkpoint-tmp'), names

  config = tiny_config(**overrides)  # The same command again.
  with caplog.at_level(logging.INFO):
    result = train.train_and_evaluate(config, workdir)
  messages = [r.getMessage() for r in caplog.records]
  assert any('Resumed from step 2 ' in m for m in messages), messages
  assert any('Removing incomplete checkpoint' in m and names[1] in m for m in messages)
  assert result['step'] == 6
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4', '6']


_EIGHT_DEVICES = textwrap.dedent('''
    import sys
    import jax
    assert jax.device_count() == 8, jax.devices()
    from resnet_jax import cli, main
    sys.argv = ['main'] + sys.argv[1:]
    cli.run(main.main, main.define_flags)
''')


def test_sigterm_on_8_devices_checkpoints_exits_cleanly_and_resumes_on_1(tmp_path,
                                                                          caplog,
                                                                          child_env):
  """Preemption of an 8-device run; its checkpoint resumes on 1 device."""
  workdir = str(tmp_path / 'run')
  overrides = {'num_train_steps': 100_000, 'checkpoint_every_steps': 100_000,
               'eval_every_steps': 100_000}
  proc = subprocess.Popen(
      [sys.executable, '-c', _EIGHT_DEVICES, f'--workdir={workdir}',
       *config_flags(**overrides)],
      cwd=REPO, env=child_env(XLA_FLAGS='--xla_force_host_platform_device_count=8'),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: len(_train_rows(workdir)) >= 2, proc)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == errors.EXIT_PREEMPTED, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith('Preempted by SIGTERM')]
  assert len(lines) == 1, stderr[-3000:]
  stopped = int(lines[0].split('checkpoints/')[1].split(';')[0])
  assert 'preempted=True' in stdout and f'step={stopped},' in stdout
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [str(stopped)]
  assert _train_rows(workdir)[-1]['step'] == stopped
  state, record = checkpoint.read_state(workdir)  # Checksums verified.
  assert record['device_count'] == 8 and int(state['step']) == stopped

  # Rerunning resumes from the stopped step (here on 1 device, with a nearer end).
  assert jax.device_count() == 1
  config = tiny_config(**{**overrides, 'num_train_steps': stopped + 2})
  with pytest.raises(ConfigError,
                     match=f'num_train_steps: 100000 -> {stopped + 2}'):
    train.train_and_evaluate(config, workdir)  # Shorter training is another run ...
  with caplog.at_level(logging.INFO):  # ... unless the user says so.
    result = train.train_and_evaluate(config, workdir, allow_config_change=True)
  assert any(f'Resumed from step {stopped} ' in r.getMessage() for r in caplog.records)
  assert result['step'] == stopped + 2 and not result['preempted']
  assert [r['step'] for r in _train_rows(workdir)][-3:] == [stopped, stopped + 1,
                                                            stopped + 2]


def test_a_one_device_checkpoint_resumes_on_8_devices(tmp_path, child_env):
  workdir = str(tmp_path / 'run')
  overrides = {'num_train_steps': 2, 'checkpoint_every_steps': 2, 'eval_every_steps': 2}
  assert jax.device_count() == 1
  train.train_and_evaluate(tiny_config(**overrides), workdir)
  _, record = checkpoint.read_state(workdir)
  assert record['device_count'] == 1 and record['step'] == 2
  longer = {**overrides, 'num_train_steps': 4, 'checkpoint_every_steps': 4}
  proc = subprocess.run(
      [sys.executable, '-c', _EIGHT_DEVICES, f'--workdir={workdir}', *config_flags(**longer)],
      cwd=REPO, env=child_env(XLA_FLAGS='--xla_force_host_platform_device_count=8'),
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Resumed from step 2 ' in proc.stderr
  state, record = checkpoint.read_state(workdir)
  assert record['device_count'] == 8 and int(state['step']) == 4
  assert [r['step'] for r in _train_rows(workdir)][-2:] == [3, 4]
