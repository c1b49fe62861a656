"""Tests for `python -m resnet_jax.evaluate` (and resnet_jax.evaluate.evaluate_checkpoint)."""

import json
import os
import subprocess
import sys

import pytest

from resnet_jax import configlib
from resnet_jax import evaluate
from resnet_jax import train
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/fake_data.py:model=cifar20'
# The whole eval split of 'fake' (10,000 examples) in 10 batches.
TINY = {'model.depth': 8, 'image_size': 16, 'batch_size': 16, 'eval_batch_size': 1000,
        'num_eval_batches': -1, 'log_every_steps': 1, 'warmup_steps': 0,
        'num_train_steps': 2, 'checkpoint_every_steps': 1, 'eval_every_steps': 100_000,
        'placement': 'device', 'augment': 'cifar'}
# Unoptimised XLA and a compilation cache shared with the subprocesses (child_env).
pytestmark = pytest.mark.usefixtures('compile_cache')


def tiny_config(**overrides):
  return configlib.load(os.path.join(REPO, CONFIG), {**TINY, **overrides})


def run_evaluate(env, *args):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.evaluate', *args], env=env,
                        cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(workdir, final metrics) of a 2-step run, checkpointed at steps 1 and 2."""
  workdir = str(tmp_path_factory.mktemp('evaluate') / 'run')
  result = train.train_and_evaluate(tiny_config(), workdir)
  return workdir, result


def test_cli_reproduces_the_final_eval_of_training(trained, child_env):
  workdir, result = trained
  proc = run_evaluate(child_env(), f'--config={CONFIG}', f'--checkpoint={workdir}',
                      *[f'--config.{k}={v}' for k, v in TINY.items()])
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 1, proc.stdout
  report = json.loads(lines[0])
  assert report['step'] == 2
  assert report['checkpoint'] == os.path.join(workdir, 'checkpoints', '2')
  assert report['eval_count'] == 10_000 == result['eval_count']
  # The same program on the same data: the same numbers, not merely close ones.
  for key in ('eval_loss', 'eval_top1', 'eval_top5'):
    assert report[key] == result[key], key
  human = [l for l in proc.stderr.splitlines() if l.startswith('step 2: top-1 ')]
  assert len(human) == 1 and 'on 10000 examples' in human[0], proc.stderr[-2000:]


def test_accepts_a_checkpoints_dir_or_a_step_dir(trained):
  workdir, result = trained
  newest = evaluate.evaluate_checkpoint(tiny_config(), os.path.join(workdir, 'checkpoints'))
  assert newest['step'] == 2 and newest['eval_top1'] == result['eval_top1']
  first = evaluate.evaluate_checkpoint(
      tiny_config(), os.path.join(workdir, 'checkpoints', '1'), num_batches=2)
  assert first['step'] == 1 and first['eval_count'] == 2000
  assert first['checkpoint'] == os.path.join(workdir, 'checkpoints', '1')


def test_a_checkpoint_of_another_model_is_a_config_error(trained):
  workdir, _ = trained
  with pytest.raises(ConfigError,
                     match='missing in checkpoint: params/stage1/block2/conv1/kernel'):
    evaluate.evaluate_checkpoint(tiny_config(**{'model.depth': 14}), workdir)


def test_missing_checkpoint_exits_2_with_one_line(tmp_path, child_env):
  missing = tmp_path / 'no_such_run'
  proc = run_evaluate(child_env(), f'--config={CONFIG}', f'--checkpoint={missing}')
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert errors == [f'error: checkpoint path {missing} does not exist'], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  empty = tmp_path / 'empty'
  empty.mkdir()
  proc = run_evaluate(child_env(), f'--config={CONFIG}', f'--checkpoint={empty}')
  assert proc.returncode == 2 and f'error: no checkpoint in {empty}' in proc.stderr
