"""A SLURM job-array script for a sweep: array task I runs the I-th point.

There is no scheduler of our own: each task runs `sweep run ... --index=I`,
which skips a finished point and resumes an interrupted one, so resubmitting
the same script (or `--requeue`) is always safe.
"""

import os
import re
import shlex
import sys
from typing import Sequence


def slurm_script(sweep_spec: str, workdir: str, num_points: int, *,
                 point_names: Sequence[str] = (), only: str | None = None,
                 set_items: Sequence[str] = (), python: str | None = None,
                 sbatch: Sequence[str] = (), setup: Sequence[str] = (),
                 max_concurrent: int = 0, job_name: str = 'sweep') -> str:
  """The script's text: task I runs `sweep run SWEEP --index=I` (one point).

  Args:
    sweep_spec: the sweep file and argument, as given to `run`.
    workdir: the sweep's workdir; SLURM's output goes there too.
    num_points: the selected points (one array task each).
    point_names: listed in a comment, index by index.
    only: --only, passed through so that indices keep naming the same points.
    set_items: --set items, passed through.
    python: the interpreter (default: this one).
    sbatch: extra `#SBATCH` options, e.g. '--gres=gpu:1'.
    setup: shell lines run before the command (e.g. activating a venv).
    max_concurrent: at most this many tasks at once (0: no limit).
    job_name: SLURM's job name.
  """
  path, sep, arg = sweep_spec.partition(':')
  spec = os.path.abspath(path) + sep + arg
  workdir = os.path.abspath(workdir)
  array = f'0-{num_points - 1}' + (f'%{max_concurrent}' if max_concurrent > 0 else '')
  cmd = [python or sys.executable, '-m', 'resnet_jax.sweep', 'run', spec,
         f'--workdir={workdir}']
  if only:
    cmd.append(f'--only={only}')
  cmd += [f'--set={s}' for s in set_items]
  job_name = re.sub(r'[^A-Za-z0-9._-]', '_', job_name)
  lines = [
      '#!/bin/bash',
      f'# {num_points} points of {sweep_spec}, one per array task; written by',
      '# `python -m resnet_jax.sweep slurm`. Submit with `sbatch THIS_FILE`.',
      '# Resubmitting skips finished points and resumes interrupted ones.',
      f'#SBATCH --job-name={job_name}',
      f'#SBATCH --array={array}',
      f'#SBATCH --output={workdir}/slurm-%A_%a.out',
  ]
  lines += [f'#SBATCH {opt}' for opt in sbatch]
  # Tasks start where the script was written, so relative paths mean the same.
  lines += ['', 'set -euo pipefail', f'cd {shlex.quote(os.getcwd())}']
  lines += list(setup)
  if point_names:
    pairs = [f'{i}={n}' for i, n in enumerate(point_names)]
    lines.append('# Task index -> point:')
    lines += ['#   ' + ' '.join(pairs[i:i + 6]) for i in range(0, len(pairs), 6)]
  # exec: the runner itself receives SLURM's SIGTERM and checkpoints its point.
  lines.append('exec ' + shlex.join(cmd) + ' --index="$SLURM_ARRAY_TASK_ID"')
  return '\n'.join(lines) + '\n'
