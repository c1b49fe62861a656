"""Tests for resnet_jax.workdir: a run's directory, its lock and its config record.

Runs use the synthetic 'fake' dataset and a CIFAR ResNet-8 on 16x16 images with
XLA's optimisations off (the compile_cache fixture).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from resnet_jax import configlib
from resnet_jax import workdir
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/fake_data.py:model=cifar20'
TINY = {'model.depth': 8, 'image_size': 16, 'batch_size': 8, 'num_eval_batches': 1,
        'log_every_steps': 1, 'warmup_steps': 0, 'num_train_steps': 2,
        'checkpoint_every_steps': 2, 'eval_every_steps': 2}

pytestmark = pytest.mark.usefixtures('compile_cache')


def main(child_env, workdir_path, *extra, popen=False, **overrides):
  args = [sys.executable, '-m', 'resnet_jax.main', f'--config={CONFIG}',
          f'--workdir={workdir_path}',
          *[f'--config.{k}={v}' for k, v in {**TINY, **overrides}.items()], *extra]
  if popen:
    return subprocess.Popen(args, cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(args, cwd=REPO, env=child_env(), capture_output=True, text=True,
                        timeout=300)


def one_error_line(proc) -> str:
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  return errors[0]


def test_a_workdir_that_cannot_be_created_is_one_line(child_env, tmp_path):
  line = one_error_line(main(child_env, '/proc/nope'))
  assert line.startswith('error: cannot create the workdir /proc/nope: '), line
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  line = one_error_line(main(child_env, blocker / 'run'))
  assert f'cannot create the workdir {blocker / "run"}' in line


def test_changes_that_alter_the_run_are_refused_and_the_history_kept(child_env, tmp_path):
  run = tmp_path / 'run'
  first = main(child_env, run, learning_rate=0.001)
  assert first.returncode == 0, first.stderr[-3000:]
  changed = main(child_env, run, learning_rate=0.5, **{'model.shortcut': 'B'})
  line = one_error_line(changed)
  assert 'learning_rate: 0.001 -> 0.5' in line and "model.shortcut: 'A' -> 'B'" in line
  assert '--allow_config_change' in line
  # Longer training and other logging/eval/checkpoint periods continue the run.
  longer = main(child_env, run, learning_rate=0.001, num_train_steps=4,
                log_every_steps=2, checkpoint_every_steps=4, eval_every_steps=4)
  assert longer.returncode == 0, longer.stderr[-3000:]
  assert 'step=4,' in longer.stdout
  allowed = main(child_env, run, '--allow_config_change', learning_rate=0.5,
                 num_train_steps=5)
  assert allowed.returncode == 0, allowed.stderr[-3000:]
  with open(run / workdir.HISTORY_FILE) as f:
    history = [json.loads(line) for line in f]
  assert [h['start_step'] for h in history] == [0, 2, 4]
  assert history[2]['changed']['learning_rate'] == [0.001, 0.5]
  assert history[1]['changed']['num_train_steps'] == [2, 4]
  assert json.loads((run / 'config.json').read_text())['learning_rate'] == 0.5


def test_config_changes_rules():
  old = {'learning_rate': 0.1, 'num_train_steps': 100, 'eval_every_steps': 10,
         'model': {'depth': 20}, 'only_old': 1}
  new = {'learning_rate': 0.1, 'num_train_steps': 200, 'eval_every_steps': 5,
         'model': {'depth': 56}, 'only_new': 2}
  changes = workdir.config_changes(old, new)
  # A field only one side has was added to the code between the runs.
  assert changes == {'num_train_steps': (100, 200), 'eval_every_steps': (10, 5),
                     'model.depth': (20, 56)}
  assert workdir.blocking_changes(changes) == {'model.depth': (20, 56)}
  shorter = workdir.config_changes(old, {**old, 'num_train_steps': 50})
  assert workdir.blocking_changes(shorter) == {'num_train_steps': (100, 50)}


def test_a_second_run_on_a_busy_workdir_refuses_at_once(child_env, tmp_path):
  run = tmp_path / 'run'
  first = main(child_env, run, popen=True, num_train_steps=100_000,
               checkpoint_every_steps=100_000, eval_every_steps=100_000)
  try:
    deadline = time.time() + 240
    while not (run / 'metrics.jsonl').exists():  # Holding the lock and training.
      assert first.poll() is None, first.stderr.read()[-3000:]
      assert time.time() < deadline
      time.sleep(0.2)
    start = time.time()
    line = one_error_line(main(child_env, run))
    assert time.time() - start < 60  # Refused at once, not after training.
    assert f'workdir {run} is in use by pid {first.pid} on ' in line, line
    assert 'submitted twice' in line
  finally:
    first.send_signal(signal.SIGKILL)  # A dead holder, as after a crash.
    first.communicate(timeout=60)
  # The lock of the killed run is taken over: rerunning needs no manual step.
  again = main(child_env, run, num_train_steps=2)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f'taking over the lock left by pid {first.pid} on ' in again.stderr


def test_ensure_writable_and_read_config(tmp_path):
  assert workdir.ensure_writable(str(tmp_path / 'a' / 'b')) == str(tmp_path / 'a' / 'b')
  assert workdir.read_config(str(tmp_path)) is None
  (tmp_path / 'config.json').write_text('{not json')
  with pytest.raises(ConfigError, match='config.json is unreadable'):
    workdir.read_config(str(tmp_path))


def test_load_stored_restores_the_recorded_config(tmp_path):
  config = configlib.load(os.path.join(REPO, CONFIG), {'model.depth': 8,
                                                      'lr_boundaries_steps': (5, 9)})
  workdir.write_config(config, str(tmp_path))
  stored = configlib.load_stored(str(tmp_path / 'checkpoints' / '7'))
  assert stored.model.depth == 8 and stored.lr_boundaries_steps == (5, 9)
  assert stored.to_dict() == config.to_dict()
  with pytest.raises(ConfigError, match='no config.json'):
    configlib.load_stored(str(tmp_path / 'elsewhere' / 'x' / 'y' / 'z'))
