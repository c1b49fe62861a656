"""Tests for `python -m resnet_jax.sweep` (resnet_jax/sweep/__main__.py): its
command line, in the project's one style (absl flags, one-line errors, exit 2)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = 'experiments/depth_shortcut.py:preset=smoke'


def _sweep_cli(*args):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.sweep', *args], cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                        text=True, timeout=300)


def test_list_shows_every_point_with_its_state(tmp_path):
  result = _sweep_cli('list', SMOKE, f'--workdir={tmp_path}', '--only=d20-*')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 5 and lines[-1] == '4 point(s) in depth_shortcut-smoke'
  assert lines[0].startswith('d20-A-s0                 not run      '
                             'configs/cifar10.py:depth=20,shortcut=A,recipe=paper seed=0 ')
  assert 'lr_boundaries_steps=(25, 38)' in lines[0]


def test_positionals_and_flags_in_any_order(tmp_path):
  """absl parses GNU-style: `run SWEEP --workdir=X` and `--workdir=X run SWEEP`."""
  a = _sweep_cli('run', SMOKE, f'--workdir={tmp_path}', '--dry_run', '--index=3')
  b = _sweep_cli(f'--workdir={tmp_path}', '--index=3', 'run', '--dry_run', SMOKE)
  assert a.returncode == b.returncode == 0, a.stderr + b.stderr
  assert a.stdout == b.stdout and a.stdout.startswith('# d20-none-s0\n')


@pytest.mark.parametrize('args, message', [
    ([], 'error: usage: python -m resnet_jax.sweep run|list|report|slurm SWEEP '
         '--workdir=DIR'),
    (['lst', SMOKE], "error: unknown command 'lst'; commands: run, list, report, slurm"),
    (['run'], 'error: run: no sweep file; usage:'),
    (['run', SMOKE, 'extra'], "error: run: extra arguments ['extra']; usage:"),
    (['list', SMOKE, '--parallel=2'],
     'error: --parallel does not apply to `list` (it is a flag of `run`)'),
    (['report', SMOKE, '--sbatch=--gres=gpu:1'],
     'error: --sbatch does not apply to `report` (it is a flag of `slurm`)'),
    (['run', SMOKE, '--parallel=0'], 'error: --parallel=0 must be at least 1'),
    (['run', SMOKE, '--index=20'],
     'error: --index=20 is out of range: 20 points selected'),
    (['list', 'experiments/nope.py'],
     "error: sweep file 'experiments/nope.py' does not exist"),
    (['list', SMOKE, '--bogus'],
     "error: bad command-line flag: Unknown command line flag 'bogus'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
  # (Errors of the sweep's values, e.g. --only matching nothing, are tested
  # in test_sweep_grid; here, that each reaches the user the same way.)
  result = _sweep_cli(*args, f'--workdir={tmp_path}')
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith(message), result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert not (tmp_path / 'd20-A-s0').exists()  # Nothing ran.


def test_workdir_is_required():
  result = _sweep_cli('list', SMOKE)
  assert result.returncode == 2
  assert result.stderr.startswith('error: bad command-line flag: ')
  assert '--workdir' in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_workdir_that_cannot_be_created_is_one_line(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  spec = 'experiments/imagenet_table3.py:preset=smoke'
  result = _sweep_cli('run', spec, f'--workdir={blocker}/sub', '--only=plain34-*')
  assert result.returncode == 2
  assert result.stderr.startswith(f'error: workdir {blocker}/sub/plain34-s0 cannot be '
                                  'created or written: Not a directory')
  assert len(result.stderr.strip().splitlines()) == 1
