"""Tests for resnet_jax.sweep.slurm and `python -m resnet_jax.sweep slurm`."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_slurm_script_has_one_array_task_per_point(tmp_path):
  workdir = tmp_path / 'abl'
  result = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.sweep', 'slurm',
       'experiments/depth_shortcut.py:preset=paper', f'--workdir={workdir}',
       '--only=*-A-*,*-none-*', '--sbatch=--gres=gpu:1', '--max_concurrent=4',
       '--setup=source .venv/bin/activate', '--set=data_dir=/data/tfds'],
      cwd=REPO, capture_output=True, text=True, check=True)
  script = result.stdout
  assert script.startswith('#!/bin/bash\n')
  assert '#SBATCH --array=0-9%4\n' in script  # 5 depths x {A, none}.
  assert '#SBATCH --gres=gpu:1\n' in script
  assert f'#SBATCH --output={workdir}/slurm-%A_%a.out' in script
  assert 'source .venv/bin/activate\n' in script
  assert '#   0=d20-A-s0 1=d20-none-s0 2=d32-A-s0 ' in script
  command = script.strip().splitlines()[-1]
  assert command.startswith('exec ') and ' -m resnet_jax.sweep run ' in command
  assert "'--only=*-A-*,*-none-*'" in command
  assert ' --set=data_dir=/data/tfds ' in command
  assert command.endswith('--index="$SLURM_ARRAY_TASK_ID"')
  assert workdir.is_dir()  # SLURM needs the --output folder to exist.

  # A task runs its point: the same command, with the index, selects one point.
  task = command[len('exec '):].replace('"$SLURM_ARRAY_TASK_ID"', '9').replace(
      ' run ', ' run --dry_run ', 1)
  result = subprocess.run(task, shell=True, cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[0] == '# d110-none-s0'
  assert '--config.data_dir=/data/tfds' in result.stdout
