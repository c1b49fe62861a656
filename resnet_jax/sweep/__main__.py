r"""Runs, lists, reports and submits the sweeps defined in experiments/*.py.

    python -m resnet_jax.sweep COMMAND SWEEP --workdir=DIR [flags]

    S=experiments/depth_shortcut.py:preset=smoke     # sweep file + argument, like --config
    python -m resnet_jax.sweep list   $S --workdir=runs/abl    # the points and their state
    python -m resnet_jax.sweep run    $S --workdir=runs/abl [--parallel=N] [--only='d20-*']
    python -m resnet_jax.sweep report $S --workdir=runs/abl [--out=DIR]
    python -m resnet_jax.sweep slurm  $S --workdir=/scratch/abl --sbatch=--gres=gpu:1 > job.sh

Every command takes --only (comma-separated globs of point names) and --set
(KEY=VALUE, a config override for every point, repeatable); `run` also takes
--parallel, --index and --dry_run; `report` --out; `slurm` --sbatch, --setup,
--max_concurrent and --python. A flag of another command is an error.

`run` exit status: 0 every point finished; 1 a point failed (or another runner
held it); 75 a point was stopped by a signal sent to it alone (rerun to
resume); 128+N the sweep was stopped by signal N; 2 bad input (one line,
nothing started: the sweep file raises, or a point's config does not load).
"""

import os
import shlex
import sys
import time

from absl import flags

from resnet_jax import cli
from resnet_jax.errors import ConfigError
from resnet_jax.errors import EXIT_OK
from resnet_jax.sweep import grid
from resnet_jax.sweep import report
from resnet_jax.sweep import runner
from resnet_jax.sweep import slurm
from resnet_jax.sweep import state

FLAGS = flags.FLAGS

COMMANDS = ('run', 'list', 'report', 'slurm')
# The flags of one command only; --workdir, --only and --set are everyone's.
COMMAND_FLAGS = {
    'run': ('parallel', 'index', 'dry_run'),
    'list': (),
    'report': ('out',),
    'slurm': ('sbatch', 'setup', 'max_concurrent', 'python'),
}
USAGE = ('usage: python -m resnet_jax.sweep run|list|report|slurm SWEEP --workdir=DIR, '
         'e.g. run experiments/depth_shortcut.py:preset=smoke --workdir=runs/smoke')


def define_flags() -> None:
  """The sweep's flags; defined only when run as a program, so that importing
  the package (sweep files, tests) leaves absl's flag namespace alone."""
  flags.DEFINE_string('workdir', None, 'Parent folder; each point runs in WORKDIR/POINT.')
  flags.mark_flag_as_required('workdir')
  flags.DEFINE_string('only', None,
                      'Comma-separated globs of point names, e.g. "d20-*,d56-A-*".')
  flags.DEFINE_multi_string('set', [], 'KEY=VALUE: a config override for every point '
                            '(repeatable), e.g. --set=data_dir=/data.')
  # run
  flags.DEFINE_integer('parallel', 1, 'run: points run at once.')
  flags.DEFINE_integer('index', None,
                       'run: only the I-th selected point (SLURM array tasks).')
  flags.DEFINE_boolean('dry_run', False, 'run: print the commands (and which points '
                       'are finished); run nothing.')
  # report
  flags.DEFINE_string('out', None, 'report: output folder (default WORKDIR/report).')
  # slurm
  flags.DEFINE_multi_string('sbatch', [], 'slurm: extra #SBATCH line (repeatable), '
                            'e.g. --sbatch=--gres=gpu:1.')
  flags.DEFINE_multi_string('setup', [], 'slurm: shell line before the command '
                            '(repeatable), e.g. "source .venv/bin/activate".')
  flags.DEFINE_integer('max_concurrent', 0,
                       'slurm: at most this many array tasks at once (0: no limit).')
  flags.DEFINE_string('python', None, 'slurm: the interpreter (default: this one).')


def _check_flags_apply(command: str) -> None:
  for other, names in COMMAND_FLAGS.items():
    for name in names:
      if other != command and FLAGS[name].present:
        raise ConfigError(f'--{name} does not apply to `{command}` (it is a flag of '
                          f'`{other}`)')


def _points(spec: str, index: int | None = None) -> tuple[grid.Sweep, list[grid.Point]]:
  sweep = grid.load_sweep(spec)
  points = grid.with_overrides(sweep.points, grid.parse_set(FLAGS['set'].value))
  return sweep, grid.select(points, FLAGS.only, index)


def _run(spec: str) -> int:
  sweep, points = _points(spec, FLAGS.index)
  workdir = os.path.abspath(FLAGS.workdir)
  if FLAGS.dry_run:
    runner.load_configs(points, sweep.source)
    for p in points:
      point_dir = os.path.join(workdir, p.name)
      done = ' (finished: would skip)' if state.is_finished(point_dir, p) else ''
      print(f'# {p.name}{done}')
      print(shlex.join(runner.point_command(p, point_dir, sweep.source)))
    return EXIT_OK
  print(f'sweep {sweep.name}: {len(points)} point(s) under {workdir}, '
        f'{FLAGS.parallel} at a time', flush=True)
  start = time.monotonic()
  outcomes, received = runner.run_points(points, workdir, sweep_source=sweep.source,
                                         parallel=FLAGS.parallel,
                                         echo=lambda s: print(s, flush=True))
  print()
  print(runner.summary_table(outcomes))
  print(f'wall time {time.monotonic() - start:.0f} s')
  return runner.exit_status(outcomes, received)


def _list(spec: str) -> int:
  sweep, points = _points(spec)
  workdir = os.path.abspath(FLAGS.workdir)
  for p in points:
    status = state.read_status(os.path.join(workdir, p.name)) or {}
    extra = ' '.join(f'{k}={runner.format_value(v)}' for k, v in p.overrides.items())
    print(f'{p.name:24s} {status.get("state", "not run"):12s} {p.config} {extra}'.rstrip())
  print(f'{len(points)} point(s) in {sweep.name}')
  return EXIT_OK


def _report(spec: str) -> int:
  sweep, points = _points(spec)
  out = FLAGS.out or os.path.join(FLAGS.workdir, 'report')
  for path in report.write_report(sweep, points, FLAGS.workdir, out,
                                  sweep_spec=spec).values():
    print(path)
  return EXIT_OK


def _slurm(spec: str) -> int:
  sweep, points = _points(spec)
  runner.load_configs(points, sweep.source)  # A typo fails here, not in every task.
  os.makedirs(FLAGS.workdir, exist_ok=True)  # SLURM writes its --output files there.
  sys.stdout.write(slurm.slurm_script(
      spec, FLAGS.workdir, len(points), point_names=[p.name for p in points],
      only=FLAGS.only, set_items=FLAGS['set'].value, python=FLAGS.python,
      sbatch=FLAGS.sbatch, setup=FLAGS.setup, max_concurrent=FLAGS.max_concurrent,
      job_name=sweep.name))
  return EXIT_OK


_RUN = {'run': _run, 'list': _list, 'report': _report, 'slurm': _slurm}


def main(argv: list[str]) -> int:
  """absl main: argv is [program, COMMAND, SWEEP]; returns the exit status."""
  args = argv[1:]
  if not args:
    raise ConfigError(USAGE)
  if args[0] not in COMMANDS:
    raise ConfigError(f'unknown command {args[0]!r}; commands: {", ".join(COMMANDS)} '
                      f'({USAGE})')
  if len(args) != 2:
    what = 'no sweep file' if len(args) == 1 else f'extra arguments {args[2:]}'
    raise ConfigError(f'{args[0]}: {what}; {USAGE}')
  _check_flags_apply(args[0])
  return _RUN[args[0]](args[1])


if __name__ == '__main__':
  cli.run(main, define_flags)
