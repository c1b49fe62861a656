r"""Sweeps: grids of `resnet_jax.main` runs defined as code, run, resumed and reported.

A sweep file (e.g. `experiments/depth_shortcut.py`) defines
`get_sweep(arg=None) -> Sweep`, a list of `Point`s (a name, a config spec and
config overrides, as on the `main` command line) plus the paper's numbers to
print beside ours. `product(...)` expands a grid in a few lines:

    points = sweep.product(
        name='d{depth}-{shortcut}-s{seed}', group='d{depth}-{shortcut}',
        config='configs/cifar10.py:depth={depth},shortcut={shortcut},recipe=paper',
        overrides=lambda seed, **_: {'seed': seed},
        depth=[20, 56], shortcut=['A', 'none'], seed=[0, 1])

Commands (the sweep argument takes `:key=value` like configs do):

    python -m resnet_jax.sweep list   experiments/depth_shortcut.py:preset=smoke --workdir=runs/abl
    python -m resnet_jax.sweep run    experiments/depth_shortcut.py:preset=smoke --workdir=runs/abl
    python -m resnet_jax.sweep report experiments/depth_shortcut.py:preset=smoke --workdir=runs/abl
    python -m resnet_jax.sweep slurm  experiments/depth_shortcut.py --workdir=/scratch/abl > job.sh

`run` gives each point its own `WORKDIR/POINT/` (main's workdir, plus `log.txt`
with the process output and `status.json`), runs points one after another or
`--parallel=N` at a time, skips finished points, resumes interrupted ones (main
resumes from its checkpoints), records failures and goes on, and exits 1 if any
point failed (75 if none failed but one was stopped by a signal: rerun to resume). A point is finished when its `status.json` says the process exited
0 and `metrics.jsonl` holds an eval row at the final step.
"""

import argparse
import ast
import csv
import dataclasses
import datetime
import fcntl
import fnmatch
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from resnet_jax import cli
from resnet_jax import configlib
from resnet_jax.configlib import ConfigError

# The directory holding the `resnet_jax` package: children import it from here.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATUS_FILE = 'status.json'
LOG_FILE = 'log.txt'
METRICS_FILE = 'metrics.jsonl'
# Exit status for bad input, as in resnet_jax.cli (not imported: it pulls in absl).
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+=-]*$')
_LOG_TAIL_LINES = 20


# --------------------------------------------------------------------------
# Sweep definition
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Point:
  """One run of `resnet_jax.main`.

  Attributes:
    name: unique within the sweep; the point's workdir is WORKDIR/name.
    config: config spec as for `--config`, e.g.
      'configs/cifar10.py:depth=20,shortcut=A'. A relative path is looked up
      from the current directory, then from the sweep file's project root.
    overrides: dotted config fields and values, as `--config.KEY=VALUE`.
    tags: the grid coordinates (e.g. depth, shortcut, seed) used by `report`.
    group: points that differ only by seed share a group ('' = the name);
      `report` averages over a group and matches the paper's numbers by it.
  """
  name: str
  config: str
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  tags: dict[str, Any] = dataclasses.field(default_factory=dict)
  group: str = ''

  def __post_init__(self):
    self.group = self.group or self.name

  def spec(self) -> dict[str, Any]:
    """What defines the run: recorded in status.json to catch reused workdirs."""
    return json.loads(json.dumps(
        {'config': self.config, 'overrides': self.overrides}, sort_keys=True,
        default=str))


@dataclasses.dataclass
class Sweep:
  """A list of points and how to report them.

  Attributes:
    points: the runs, in the order they are run.
    paper_results: published numbers by group, in percent, e.g.
      {'d20-A': {'top1_err': 8.75}}; keys 'top1_err' and 'top5_err'.
    name: a title for reports ('' = the sweep file's name).
    description: one line for reports: what the grid measures.
    notes: Markdown appended to the report (caveats about the paper's numbers).
    x: the tag on the x axis of the error plot and the rows of the pivot table.
    series: the tag that makes one line (and one curve panel) per value.
    series_labels: display names for series values, e.g. {'none': 'plain'}.
    metrics: which test errors to report: ('top1',) or ('top1', 'top5').
    source: the sweep file (set by `load_sweep`).
  """
  points: list[Point]
  paper_results: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  name: str = ''
  description: str = ''
  notes: str = ''
  x: str = 'depth'
  series: str = 'shortcut'
  series_labels: dict[str, str] = dataclasses.field(default_factory=dict)
  metrics: tuple[str, ...] = ('top1',)
  source: str = ''

  def label(self, series_value) -> str:
    return self.series_labels.get(str(series_value), str(series_value))


Template = str | Callable[..., Any]


def _fill(template: Template, values: Mapping[str, Any], what: str):
  """A template filled with the grid values: str.format, or a function call."""
  if callable(template):
    return template(**values)
  try:
    return template.format(**values)
  except (KeyError, IndexError) as e:
    raise ConfigError(f'{what} template {template!r} names {e} which is not a grid '
                      f'axis; axes: {sorted(values)}') from None


def product(name: Template, config: Template,
            overrides: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
            group: Template | None = None, **axes: Iterable[Any]) -> list[Point]:
  """Expands a grid: one Point per combination of the axes' values.

  Args:
    name: the point's name, a str.format template over the axes
      ('d{depth}-{shortcut}-s{seed}') or a function of them (keyword args).
    config: the config spec, a template or function in the same way.
    overrides: fixed config overrides, or a function of the axes returning them
      (e.g. `lambda seed, **_: {'seed': seed}`).
    group: template or function for the point's group (points differing only
      by seed); None: each point is its own group.
    **axes: axis name -> values; the last axis varies fastest.

  Returns:
    The points, with `tags` holding each point's axis values.
  """
  if not axes:
    raise ConfigError('product() needs at least one axis, e.g. depth=[20, 56]')
  keys = list(axes)
  points = []
  for values in itertools.product(*(list(axes[k]) for k in keys)):
    tags = dict(zip(keys, values))
    extra = overrides(**tags) if callable(overrides) else overrides
    points.append(Point(
        name=_fill(name, tags, 'name'), config=_fill(config, tags, 'config'),
        overrides=dict(extra or {}), tags=tags,
        group=_fill(group, tags, 'group') if group is not None else ''))
  return points


def validate(sweep: 'Sweep') -> None:
  """Checks names (unique, usable as folder names) and paper keys (existing groups)."""
  if not isinstance(sweep, Sweep):
    raise ConfigError(f'get_sweep() returned {type(sweep).__name__}; it must return '
                      'resnet_jax.sweep.Sweep(points=[...])')
  if not sweep.points:
    raise ConfigError('the sweep has no points')
  seen = set()
  for p in sweep.points:
    if not _NAME_RE.match(p.name):
      raise ConfigError(f'point name {p.name!r} must be letters, digits and ._+=- '
                        '(it names a folder)')
    if p.name in seen:
      raise ConfigError(f'two points are named {p.name!r}; names must be unique '
                        '(add the differing axis, e.g. -s{seed}, to the name)')
    seen.add(p.name)
  groups = {p.group for p in sweep.points}
  unknown = sorted(set(sweep.paper_results) - groups)
  if unknown:
    raise ConfigError(f'paper_results names groups {unknown} that no point has; '
                      f'groups: {sorted(groups)}')


def load_sweep(spec: str) -> Sweep:
  """Loads 'path/to/sweep.py[:arg]' by calling its get_sweep(arg)."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise ConfigError(f'sweep file {path!r} does not exist')
  module_name = f'_resnet_jax_sweep_{abs(hash(os.path.abspath(path)))}'
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise ConfigError(f'sweep file {path!r} defines no get_sweep(arg=None)')
  sweep = module.get_sweep(arg or None)
  validate(sweep)
  sweep.source = os.path.abspath(path)
  sweep.name = sweep.name or os.path.splitext(os.path.basename(path))[0]
  return sweep


def select(points: Sequence[Point], only: str | None = None,
           index: int | None = None) -> list[Point]:
  """The points named by --only (comma-separated globs), then the --index-th of them."""
  selected = list(points)
  if only:
    patterns = [p.strip() for p in only.split(',') if p.strip()]
    selected = [p for p in points if any(fnmatch.fnmatchcase(p.name, pat)
                                         for pat in patterns)]
    if not selected:
      raise ConfigError(f'--only={only} matches no point; names look like '
                        f'{points[0].name!r} (globs work: d20-*,*-A-*)')
  if index is not None:
    if not 0 <= index < len(selected):
      raise ConfigError(f'--index={index} is out of range: {len(selected)} points '
                        f'selected, valid 0..{len(selected) - 1}')
    selected = [selected[index]]
  return selected


def parse_set(items: Sequence[str]) -> dict[str, Any]:
  """--set KEY=VALUE items into overrides; values parse as Python literals, else text."""
  out = {}
  for item in items or ():
    key, sep, text = item.partition('=')
    if not sep or not key:
      raise ConfigError(f'--set {item!r} is not KEY=VALUE (e.g. --set=data_dir=/data)')
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def with_overrides(points: Sequence[Point], extra: Mapping[str, Any]) -> list[Point]:
  """The points with `extra` overrides added (--set applies to every point)."""
  if not extra:
    return list(points)
  return [dataclasses.replace(p, overrides={**p.overrides, **extra}) for p in points]


# --------------------------------------------------------------------------
# Per-point state on disk
# --------------------------------------------------------------------------


def resolve_config_path(config: str, sweep_source: str = '') -> str:
  """The config spec with its file made absolute (the child may run elsewhere)."""
  path, sep, arg = config.partition(':')
  candidates = [path]
  if not os.path.isabs(path) and sweep_source:
    # experiments/x.py names configs/y.py relative to the project root.
    sweep_dir = os.path.dirname(os.path.abspath(sweep_source))
    candidates += [os.path.join(os.path.dirname(sweep_dir), path),
                   os.path.join(sweep_dir, path)]
  candidates.append(os.path.join(PACKAGE_ROOT, path))
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate) + sep + arg
  raise ConfigError(f'config file {path!r} does not exist (looked in the current '
                    'directory and the project root)')


def read_status(point_dir: str) -> dict[str, Any] | None:
  path = os.path.join(point_dir, STATUS_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None  # A torn write from a killed runner: treat as never run.


def write_status(point_dir: str, status: Mapping[str, Any]) -> None:
  """Writes status.json atomically, so a killed runner never leaves half a file."""
  path = os.path.join(point_dir, STATUS_FILE)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(status, f, indent=2, sort_keys=True, default=str)
    f.write('\n')
  os.replace(tmp, path)


def _number(value) -> float:
  """A metric value as float; metric_writers stores NaN/inf as strings."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def read_metrics(point_dir: str) -> list[dict[str, Any]]:
  """metrics.jsonl rows, tolerating a torn last line from a killed process."""
  path = os.path.join(point_dir, METRICS_FILE)
  rows = []
  if not os.path.isfile(path):
    return rows
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def _by_step(rows: Iterable[Mapping[str, Any]], key: str) -> dict[int, dict[str, Any]]:
  """Rows that have `key`, by step; the last one wins (a resumed run re-logs steps)."""
  out = {}
  for row in rows:
    if key in row and 'step' in row:
      out[int(row['step'])] = dict(row)
  return dict(sorted(out.items()))


def final_eval(rows: Sequence[Mapping[str, Any]],
               final_step: int | None = None) -> dict[str, Any] | None:
  """The eval row at `final_step` (default: the last step logged), or None."""
  evals = _by_step(rows, 'eval_top1')
  if final_step is None:
    steps = [int(r['step']) for r in rows if 'step' in r]
    if not steps:
      return None
    final_step = max(steps)
  return evals.get(final_step)


def expected_steps(config) -> int | None:
  """The run's length when the config states it in steps (else it needs the dataset)."""
  steps = config.get('num_train_steps', -1)
  return int(steps) if steps and steps > 0 else None


def is_finished(point_dir: str, point: Point) -> bool:
  """True when a previous run of this very point exited 0 with a final eval."""
  status = read_status(point_dir)
  if not status or status.get('state') != 'done' or status.get('spec') != point.spec():
    return False
  return final_eval(read_metrics(point_dir), status.get('final_step')) is not None


def check_workdir_matches(point_dir: str, point: Point) -> None:
  """Refuses to resume or skip a point whose workdir holds a different config."""
  status = read_status(point_dir)
  if status and 'spec' in status and status['spec'] != point.spec():
    raise ConfigError(
        f'{point_dir} holds a run of a different config ({_spec_text(status["spec"])}; '
        f'now {_spec_text(point.spec())}): use another --workdir or remove that folder')


def _spec_text(spec: Mapping[str, Any]) -> str:
  overrides = ' '.join(f'{k}={v}' for k, v in sorted(spec.get('overrides', {}).items()))
  return f'{spec.get("config")} {overrides}'.strip()


def _clean_log_line(line: str) -> str:
  # tqdm redraws with carriage returns: keep what a terminal would show.
  return line.rstrip('\n').split('\r')[-1].rstrip()


def log_tail(point_dir: str, n: int = _LOG_TAIL_LINES, offset: int = 0) -> list[str]:
  """The last `n` non-empty lines of the point's log after byte `offset`."""
  path = os.path.join(point_dir, LOG_FILE)
  if not os.path.isfile(path):
    return []
  with open(path, encoding='utf-8', errors='replace') as f:
    f.seek(offset)
    lines = [_clean_log_line(l) for l in f.readlines()[-4 * n:]]
  return [l for l in lines if l][-n:]


def failure_reason(tail: Sequence[str]) -> str:
  """The most telling line of a failed run's log: its error line, else the last one."""
  for line in reversed(tail):
    line = line.strip()  # Chained tracebacks indent the inner error.
    if line.startswith('error:') or re.match(r'^[\w.]*(Error|Exception)\b', line):
      return line
  return tail[-1] if tail else 'no output'


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec='seconds')


# --------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------


def _format_value(value: Any) -> str:
  """A Python value as ml_collections' config flags parse it back."""
  if isinstance(value, (list, tuple)):
    return '(' + ', '.join(repr(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def point_command(point: Point, point_dir: str, sweep_source: str = '',
                  python: str | None = None) -> list[str]:
  """The `resnet_jax.main` command line that runs `point` in `point_dir`."""
  cmd = [python or sys.executable, '-m', 'resnet_jax.main',
         f'--config={resolve_config_path(point.config, sweep_source)}',
         f'--workdir={os.path.abspath(point_dir)}']
  cmd += [f'--config.{k}={_format_value(v)}' for k, v in point.overrides.items()]
  return cmd


@dataclasses.dataclass
class Outcome:
  """What happened to one point in this invocation of `run`."""
  point: Point
  state: str  # done | skipped | failed | interrupted | busy | not started
  step: int | None = None
  eval_top1: float | None = None
  wall_s: float | None = None
  note: str = ''


class _Job:
  """A point's running `main` process with its lock, log and status."""

  def __init__(self, point: Point, point_dir: str, command: list[str],
               lock_fd: int, expected: int | None, env: Mapping[str, str]):
    self.point, self.point_dir, self.command = point, point_dir, command
    self.lock_fd, self.expected = lock_fd, expected
    previous = read_status(point_dir) or {}
    self.status = {
        'name': point.name, 'state': 'running', 'spec': point.spec(),
        'command': command, 'attempts': int(previous.get('attempts', 0)) + 1,
        'started': _now(), 'host': socket.gethostname(),
        'slurm_job': os.environ.get('SLURM_JOB_ID', ''),
        'total_wall_s': float(previous.get('total_wall_s', 0.0)),
    }
    write_status(point_dir, self.status)
    self.start = time.monotonic()
    self.log = open(os.path.join(point_dir, LOG_FILE), 'a', encoding='utf-8')
    self.log_offset = self.log.tell()  # This attempt's output starts here.
    self.log.write(f'=== {self.status["started"]} attempt {self.status["attempts"]} '
                   f'on {self.status["host"]}: {shlex.join(command)}\n')
    self.log.flush()
    # Own session: a Ctrl-C reaches only the runner, which forwards exactly one
    # signal, so main checkpoints instead of seeing two and quitting at once.
    # The child inherits the lock, so it stays held if the runner dies first.
    self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=dict(env),
                                 start_new_session=True, pass_fds=(lock_fd,))

  def finish(self, interrupted: bool) -> Outcome:
    """Records the exit of the process in status.json; releases the lock."""
    rc = self.proc.returncode
    wall = time.monotonic() - self.start
    self.log.write(f'=== {_now()} exit code {rc} after {wall:.0f} s\n')
    self.log.close()
    rows = read_metrics(self.point_dir)
    tail = log_tail(self.point_dir, offset=self.log_offset)
    final = final_eval(rows, self.expected)
    # Status 75 is how main says it saved a checkpoint and stopped on a signal;
    # the log line covers a runner that reports 0 regardless.
    preempted = rc == cli.EXIT_PREEMPTED or any('preempted=True' in line for line in tail)
    if rc == 0 and final is not None and not preempted:
      state, note = 'done', ''
    elif interrupted or preempted:
      state, note = 'interrupted', 'stopped by a signal; rerun to resume'
    elif rc == 0:
      state = 'failed'
      note = (f'exited 0 without an eval row at the final step '
              f'{self.expected or "(last logged)"} in {METRICS_FILE}')
    elif rc < 0:
      # Killed from outside without a chance to say why; often the OOM killer.
      state = 'failed'
      note = f'killed by {signal.Signals(-rc).name} (out of memory?); rerun to resume'
    else:
      state, note = 'failed', failure_reason(tail)
    self.status.update(
        state=state, returncode=rc, finished=_now(), wall_s=round(wall, 1),
        total_wall_s=round(self.status['total_wall_s'] + wall, 1), reason=note,
        log_tail=tail if state != 'done' else [])
    if final is not None:
      self.status.update(final_step=int(final['step']),
                         eval_top1=_number(final.get('eval_top1')),
                         eval_top5=_number(final.get('eval_top5')))
    write_status(self.point_dir, self.status)
    os.close(self.lock_fd)
    return Outcome(self.point, state, step=self.status.get('final_step'),
                   eval_top1=self.status.get('eval_top1'), wall_s=wall, note=note)


def _try_lock(point_dir: str) -> int | None:
  """An exclusive lock on the point (None when another runner holds it)."""
  fd = os.open(os.path.join(point_dir, '.lock'), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    os.close(fd)
    return None
  return fd


def _fail_without_running(point: Point, point_dir: str, message: str) -> Outcome:
  """Records a point whose config does not even load (no process started)."""
  previous = read_status(point_dir) or {}
  with open(os.path.join(point_dir, LOG_FILE), 'a', encoding='utf-8') as f:
    f.write(f'=== {_now()} not started: error: {message}\n')
  write_status(point_dir, {
      'name': point.name, 'state': 'failed', 'spec': point.spec(),
      'returncode': EXIT_BAD_INPUT, 'attempts': int(previous.get('attempts', 0)) + 1,
      'started': _now(), 'finished': _now(), 'reason': f'error: {message}',
      'log_tail': [f'error: {message}']})
  return Outcome(point, 'failed', note=f'error: {message}')


def _child_env(parallel: int) -> dict[str, str]:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (PACKAGE_ROOT, env.get('PYTHONPATH', '')) if p)
  if parallel > 1:
    # Several processes on one GPU: JAX would otherwise grab 75 % of it each.
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  return env


class _Signals:
  """Forwards SIGINT/SIGTERM/SIGHUP to the running points and stops starting new ones."""

  def __init__(self):
    self.received = None
    self.jobs: list[_Job] = []
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signum
    forwarded = signal.SIGTERM if signum == signal.SIGHUP else signum
    # os.write, not print: print is not reentrant if the signal lands inside one.
    os.write(2, (f'sweep: got {signal.Signals(signum).name}: stopping the running '
                 'points (they checkpoint), starting no more; rerun to resume.\n').encode())
    for job in self.jobs:
      if job.proc.poll() is None:
        job.proc.send_signal(forwarded)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


def run_points(points: Sequence[Point], workdir: str, *, sweep_source: str = '',
               parallel: int = 1, poll_s: float = 0.2,
               echo: Callable[[str], None] = print) -> tuple[list[Outcome], int | None]:
  """Runs the points not finished yet, `parallel` at a time.

  Returns:
    (outcomes in point order, the signal that stopped the sweep or None).
  """
  if parallel < 1:
    raise ConfigError(f'--parallel={parallel} must be at least 1')
  for p in points:
    check_workdir_matches(os.path.join(workdir, p.name), p)
  env = _child_env(parallel)
  outcomes: dict[str, Outcome] = {}
  pending = list(points)
  total = len(points)
  order = {p.name: i + 1 for i, p in enumerate(points)}
  with _Signals() as signals:
    while pending or signals.jobs:
      while pending and len(signals.jobs) < parallel and signals.received is None:
        point = pending.pop(0)
        job_or_outcome = _start(point, workdir, sweep_source, env)
        tag = f'[{order[point.name]}/{total}] {point.name}'
        if isinstance(job_or_outcome, Outcome):
          outcomes[point.name] = job_or_outcome
          echo(f'{tag}: {_describe(job_or_outcome)}')
        else:
          signals.jobs.append(job_or_outcome)
          echo(f'{tag}: started (log: {os.path.join(job_or_outcome.point_dir, LOG_FILE)})')
      for job in list(signals.jobs):
        if job.proc.poll() is not None:
          signals.jobs.remove(job)
          outcome = job.finish(interrupted=signals.received is not None)
          outcomes[job.point.name] = outcome
          echo(f'[{order[job.point.name]}/{total}] {job.point.name}: {_describe(outcome)}')
      if signals.jobs:
        time.sleep(poll_s)
      if signals.received is not None and not signals.jobs:
        break
  for p in pending:
    outcomes[p.name] = Outcome(p, 'not started')
  return [outcomes[p.name] for p in points], signals.received


def _start(point: Point, workdir: str, sweep_source: str,
           env: Mapping[str, str]) -> '_Job | Outcome':
  """Starts a point's process, or says why it needs none (finished, busy, bad config)."""
  point_dir = os.path.join(workdir, point.name)
  os.makedirs(point_dir, exist_ok=True)
  lock_fd = _try_lock(point_dir)
  if lock_fd is None:
    return Outcome(point, 'busy', note='another runner holds this point')
  if is_finished(point_dir, point):
    os.close(lock_fd)
    status = read_status(point_dir)
    return Outcome(point, 'skipped', step=status.get('final_step'),
                   eval_top1=status.get('eval_top1'), wall_s=status.get('total_wall_s'),
                   note='finished before')
  try:
    # Load the config here too: a typo fails in milliseconds, and the run's
    # length (when given in steps) tells what "finished" means.
    config = configlib.load(resolve_config_path(point.config, sweep_source),
                            point.overrides)
    command = point_command(point, point_dir, sweep_source)
  except ConfigError as e:
    os.close(lock_fd)
    return _fail_without_running(point, point_dir, str(e))
  return _Job(point, point_dir, command, lock_fd, expected_steps(config), env)


def _describe(o: Outcome) -> str:
  parts = [o.state]
  if o.wall_s is not None and o.state != 'skipped':
    parts.append(f'in {o.wall_s:.0f} s')
  if o.step is not None:
    parts.append(f'step {o.step}')
  if o.eval_top1 is not None and not math.isnan(o.eval_top1):
    parts.append(f'test err {100 * (1 - o.eval_top1):.2f} %')
  text = ', '.join(parts)
  return f'{text} ({o.note})' if o.note else text


def summary_table(outcomes: Sequence[Outcome]) -> str:
  """A plain-text table of what happened to each point."""
  rows = [('point', 'result', 'step', 'test err %', 'time', 'note')]
  for o in outcomes:
    err = ('' if o.eval_top1 is None or math.isnan(o.eval_top1)
           else f'{100 * (1 - o.eval_top1):.2f}')
    rows.append((o.point.name, o.state, '' if o.step is None else str(o.step), err,
                 '' if o.wall_s is None else f'{o.wall_s:.0f} s', o.note[:100]))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
  lines = ['  '.join(c.ljust(w) for c, w in zip(r[:-1], widths)) + '  ' + r[-1]
           for r in rows]
  counts = {}
  for o in outcomes:
    counts[o.state] = counts.get(o.state, 0) + 1
  lines.append(', '.join(f'{n} {s}' for s, n in counts.items()))
  return '\n'.join(l.rstrip() for l in lines)


# --------------------------------------------------------------------------
# slurm
# --------------------------------------------------------------------------


def slurm_script(sweep_spec: str, workdir: str, num_points: int, *,
                 point_names: Sequence[str] = (), only: str | None = None,
                 set_items: Sequence[str] = (), python: str | None = None,
                 sbatch: Sequence[str] = (), setup: Sequence[str] = (),
                 max_concurrent: int = 0, job_name: str = 'sweep') -> str:
  """A SLURM job-array script: task I runs `sweep run ... --index=I` (one point)."""
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


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


@dataclasses.dataclass
class PointResult:
  """A point's final metrics and curves, read from its workdir."""
  point: Point
  state: str
  step: int | None = None
  top1_err: float = math.nan  # test error %, top-1
  top5_err: float = math.nan
  eval_loss: float = math.nan
  train_top1_err: float = math.nan  # over the last training log window
  train_loss: float = math.nan
  train_curve: tuple[list[int], list[float]] = ([], [])
  eval_curve: tuple[list[int], list[float]] = ([], [])
  config: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def has_eval(self) -> bool:
    return not math.isnan(self.top1_err)


def _err(top: Any) -> float:
  return 100.0 * (1.0 - _number(top))


def collect(points: Sequence[Point], workdir: str) -> list[PointResult]:
  """Reads every point's status, config.json and metrics.jsonl."""
  results = []
  for p in points:
    point_dir = os.path.join(workdir, p.name)
    status = read_status(point_dir) or {}
    rows = read_metrics(point_dir)
    state = status.get('state') or ('not run' if not rows else 'unknown')
    result = PointResult(p, state)
    config_path = os.path.join(point_dir, 'config.json')
    if os.path.isfile(config_path):
      with open(config_path, encoding='utf-8') as f:
        result.config = json.load(f)
    train = _by_step(rows, 'train_top1')
    evals = _by_step(rows, 'eval_top1')
    if train:
      last = train[max(train)]
      result.train_top1_err = _err(last['train_top1'])
      result.train_loss = _number(last.get('train_loss'))
      result.train_curve = (list(train), [_err(r['train_top1']) for r in train.values()])
    if evals:
      # The final eval when finished; else the latest one (marked in the report).
      step = status.get('final_step') if state == 'done' else None
      last = evals.get(step) if step in evals else evals[max(evals)]
      result.step = int(last['step'])
      result.top1_err = _err(last['eval_top1'])
      result.top5_err = _err(last['eval_top5']) if 'eval_top5' in last else math.nan
      result.eval_loss = _number(last.get('eval_loss'))
      result.eval_curve = (list(evals), [_err(r['eval_top1']) for r in evals.values()])
    results.append(result)
  return results


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return math.nan, math.nan
  std = statistics.stdev(values) if len(values) > 1 else math.nan
  return statistics.fmean(values), std


@dataclasses.dataclass
class GroupResult:
  """Mean and std over the seeds of a group."""
  group: str
  tags: dict[str, Any]
  results: list[PointResult]
  paper: dict[str, float]

  @property
  def finished(self) -> list[PointResult]:
    return [r for r in self.results if r.has_eval]

  @property
  def complete(self) -> bool:
    return all(r.state == 'done' for r in self.results)

  def stat(self, attr: str) -> tuple[float, float]:
    return _mean_std([getattr(r, attr) for r in self.finished])


def group_results(sweep: Sweep, results: Sequence[PointResult]) -> list[GroupResult]:
  groups: dict[str, GroupResult] = {}
  for r in results:
    g = r.point.group
    if g not in groups:
      tags = {k: v for k, v in r.point.tags.items() if k != 'seed'}
      groups[g] = GroupResult(g, tags, [], dict(sweep.paper_results.get(g, {})))
    groups[g].results.append(r)
  return list(groups.values())


def _fmt(value: float, digits: int = 2) -> str:
  return '' if value is None or math.isnan(value) else f'{value:.{digits}f}'


def _fmt_mean_std(mean: float, std: float) -> str:
  if math.isnan(mean):
    return '–'
  return f'{mean:.2f} ± {std:.2f}' if not math.isnan(std) else f'{mean:.2f}'


def write_points_csv(path: str, sweep: Sweep, results: Sequence[PointResult]) -> None:
  tag_keys = _tag_keys(sweep)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['point', 'group', *tag_keys, 'state', 'step', 'test_err_top1',
                'test_err_top5', 'eval_loss', 'train_err_top1', 'train_loss',
                'paper_top1_err', 'paper_top5_err', 'dataset', 'batch_size'])
    for r in results:
      paper = sweep.paper_results.get(r.point.group, {})
      w.writerow([r.point.name, r.point.group,
                  *[r.point.tags.get(k, '') for k in tag_keys], r.state,
                  '' if r.step is None else r.step, _fmt(r.top1_err, 4),
                  _fmt(r.top5_err, 4), _fmt(r.eval_loss, 4), _fmt(r.train_top1_err, 4),
                  _fmt(r.train_loss, 4), paper.get('top1_err', ''),
                  paper.get('top5_err', ''), r.config.get('dataset', ''),
                  r.config.get('batch_size', '')])


def write_summary_csv(path: str, sweep: Sweep, groups: Sequence[GroupResult]) -> None:
  tag_keys = [k for k in _tag_keys(sweep) if k != 'seed']
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['group', *tag_keys, 'n', 'complete', 'test_err_top1_mean',
                'test_err_top1_std', 'test_err_top5_mean', 'test_err_top5_std',
                'train_err_top1_mean', 'paper_top1_err', 'paper_top5_err'])
    for g in groups:
      t1, t5, tr = g.stat('top1_err'), g.stat('top5_err'), g.stat('train_top1_err')
      w.writerow([g.group, *[g.tags.get(k, '') for k in tag_keys], len(g.finished),
                  g.complete, _fmt(t1[0], 4), _fmt(t1[1], 4), _fmt(t5[0], 4),
                  _fmt(t5[1], 4), _fmt(tr[0], 4), g.paper.get('top1_err', ''),
                  g.paper.get('top5_err', '')])


def _tag_keys(sweep: Sweep) -> list[str]:
  keys = []
  for p in sweep.points:
    keys += [k for k in p.tags if k not in keys]
  return keys


def _setting(results: Sequence[PointResult], key: str) -> str:
  """A config value shared by the points, or 'varies'."""
  values = {json.dumps(r.config.get(key), default=str) for r in results if r.config}
  if not values:
    return '?'
  return json.loads(values.pop()) if len(values) == 1 else 'varies'


def markdown_report(sweep: Sweep, groups: Sequence[GroupResult],
                    results: Sequence[PointResult], *, sweep_spec: str,
                    workdir: str) -> str:
  """The report as Markdown: settings, a depth x shortcut pivot, every group."""
  done = sum(r.state == 'done' for r in results)
  steps = sorted({r.step for r in results if r.step is not None})
  lines = [f'# {sweep.name}: results', '']
  if sweep.description:
    lines += [sweep.description, '']
  lines += [
      f'- Sweep: `{sweep_spec}`, workdir `{workdir}`; {done} of {len(results)} points '
      'finished.',
      f'- Dataset: `{_setting(results, "dataset")}`; batch {_setting(results, "batch_size")}; '
      f'optimizer {_setting(results, "optimizer")}, lr {_setting(results, "learning_rate")} '
      f'({_setting(results, "schedule")}); steps: {", ".join(map(str, steps)) or "–"}.',
      '- Test error = 100 − top-1 accuracy (%), mean ± std over seeds at the final eval; '
      'train error over the last logged training window (augmented batches).',
      '']
  lines += _pivot_markdown(sweep, groups)
  tag_cols = [k for k in _tag_keys(sweep) if k != 'seed']
  header = ['group', *tag_cols, 'seeds']
  for m in sweep.metrics:
    header += [f'test err % ({m})', f'paper % ({m})']
  header.append('train err %')
  lines += ['## All groups', '', '| ' + ' | '.join(header) + ' |',
            '|' + '---|' * len(header)]
  any_partial = False
  for g in groups:
    mark = ''
    if not g.complete and g.finished:
      mark, any_partial = ' †', True
    row = [g.group + mark, *[str(g.tags.get(k, '')) for k in tag_cols],
           str(len(g.finished))]
    # A group without results says why: not run, failed, running...
    missing = '– (' + ', '.join(_unique(r.state for r in g.results)) + ')'
    for m in sweep.metrics:
      ours = _fmt_mean_std(*g.stat(f'{m}_err')) if g.finished else missing
      row += [ours, _fmt(g.paper.get(f'{m}_err', math.nan))]
    row.append(_fmt_mean_std(*g.stat('train_top1_err')))
    lines.append('| ' + ' | '.join(row) + ' |')
  lines.append('')
  if any_partial:
    lines += ['† not all of its points finished: the latest eval is shown.', '']
  if sweep.notes:
    lines += ['## Notes', '', sweep.notes.strip(), '']
  return '\n'.join(lines)


def _pivot_markdown(sweep: Sweep, groups: Sequence[GroupResult]) -> list[str]:
  """Test error with x values as rows and series values as columns (the paper's view)."""
  if not (sweep.x and sweep.series and
          all(sweep.x in g.tags and sweep.series in g.tags for g in groups)):
    return []
  xs = sorted(_unique(g.tags[sweep.x] for g in groups), key=_sort_key)
  series = _unique(g.tags[sweep.series] for g in groups)
  cell = {(g.tags[sweep.x], g.tags[sweep.series]): g for g in groups}
  with_paper = [s for s in series
                if any('top1_err' in g.paper for g in groups if g.tags[sweep.series] == s)]
  header = [sweep.x]
  for s in series:
    header.append(sweep.label(s))
    if s in with_paper:
      header.append(f'paper {sweep.label(s)}')
  lines = [f'## Test error % (top-1) by {sweep.x} and {sweep.series}', '',
           '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for x in xs:
    row = [str(x)]
    for s in series:
      g = cell.get((x, s))
      row.append(_fmt_mean_std(*g.stat('top1_err')) if g else '')
      if s in with_paper:
        row.append(_fmt(g.paper.get('top1_err', math.nan)) if g else '')
    lines.append('| ' + ' | '.join(row) + ' |')
  return lines + ['']


def _unique(values: Iterable[Any]) -> list[Any]:
  out = []
  for v in values:
    if v not in out:
      out.append(v)
  return out


def _series_of(sweep: Sweep, tags: Mapping[str, Any]):
  """The point's series value; '' for every point when the sweep has no series."""
  return tags.get(sweep.series, '') if sweep.series else ''


def _sort_key(value):
  return (0, value, '') if isinstance(value, (int, float)) else (1, 0, str(value))


def plot_error_vs_x(path: str, sweep: Sweep, groups: Sequence[GroupResult]) -> bool:
  """Test error vs depth, one line per shortcut (paper's numbers dashed)."""
  if not sweep.x or not all(sweep.x in g.tags for g in groups):
    return False
  if sweep.series and not all(sweep.series in g.tags for g in groups):
    return False
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for i, s in enumerate(_unique(_series_of(sweep, g.tags) for g in groups)):
    color = colors[i % len(colors)]
    label = sweep.label(s) if sweep.series else 'ours'
    in_series = sorted((g for g in groups if _series_of(sweep, g.tags) == s),
                       key=lambda g: _sort_key(g.tags[sweep.x]))
    mine = [g for g in in_series if g.finished]
    if mine:
      stats = [g.stat('top1_err') for g in mine]
      ax.errorbar([g.tags[sweep.x] for g in mine], [m for m, _ in stats],
                  yerr=[0 if math.isnan(sd) else sd for _, sd in stats], marker='o',
                  color=color, capsize=3, label=label)
    paper = [g for g in in_series if 'top1_err' in g.paper]
    if paper:
      ax.plot([g.tags[sweep.x] for g in paper], [g.paper['top1_err'] for g in paper],
              linestyle='--', marker='s', markerfacecolor='none', color=color,
              label=f'{label} (paper)')
  xs = _unique(g.tags[sweep.x] for g in groups)
  if all(isinstance(x, (int, float)) for x in xs):
    ax.set_xticks(sorted(xs))
  # Ours first, then the paper's, in series order (matplotlib lists error bars last).
  handles, labels = ax.get_legend_handles_labels()
  order = sorted(range(len(labels)), key=lambda i: (labels[i].endswith('(paper)'), i))
  ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize='small')
  ax.set_xlabel(sweep.x)
  ax.set_ylabel('test error (%)')
  ax.set_title(f'{sweep.name}: test error vs {sweep.x}')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def plot_curves(path: str, sweep: Sweep, results: Sequence[PointResult]) -> bool:
  """Train (dashed) and test (solid) error vs step; one panel per series (Fig. 6)."""
  results = [r for r in results if r.train_curve[0] or r.eval_curve[0]]
  if not results:
    return False
  plt = _pyplot()
  by_series = sweep.series and all(sweep.series in r.point.tags for r in results)
  panels = (_unique(r.point.tags[sweep.series] for r in results) if by_series else [None])
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8),
                           sharey=True, squeeze=False)
  colored_by = sweep.x if all(sweep.x in r.point.tags for r in results) else None
  keys = _unique(r.point.tags[colored_by] if colored_by else r.point.group
                 for r in results)
  cmap = plt.get_cmap('viridis')
  color = {k: cmap(i / max(1, len(keys) - 1) * 0.9) for i, k in enumerate(keys)}
  for ax, panel in zip(axes[0], panels):
    labelled = set()
    for r in results:
      if by_series and r.point.tags[sweep.series] != panel:
        continue
      key = r.point.tags[colored_by] if colored_by else r.point.group
      label = None if key in labelled else (f'{colored_by} {key}' if colored_by else key)
      labelled.add(key)
      if r.train_curve[0]:
        ax.plot(*r.train_curve, linestyle='--', linewidth=0.9, color=color[key],
                label=None if r.eval_curve[0] else label)
      if r.eval_curve[0]:
        ax.plot(*r.eval_curve, linestyle='-', linewidth=1.8, marker='.',
                color=color[key], label=label)
    ax.set_title(sweep.label(panel) if by_series else sweep.name)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='x-small')
  axes[0][0].set_ylabel('error (%): test solid, train dashed')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def _pyplot():
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError('report plots need matplotlib: pip install matplotlib') from e
  matplotlib.use('Agg')  # Files only; works without a display.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def write_report(sweep: Sweep, points: Sequence[Point], workdir: str, out: str, *,
                 sweep_spec: str) -> dict[str, str]:
  """Writes points.csv, summary.csv, results.md and the PNGs; returns name -> path."""
  results = collect(points, workdir)
  if not any(r.has_eval or r.train_curve[0] for r in results):
    raise ConfigError(f'no point under {workdir} has metrics yet; run the sweep first '
                      f'(python -m resnet_jax.sweep run {sweep_spec} --workdir={workdir})')
  groups = group_results(sweep, results)
  os.makedirs(out, exist_ok=True)
  files = {'points.csv': os.path.join(out, 'points.csv'),
           'summary.csv': os.path.join(out, 'summary.csv'),
           'results.md': os.path.join(out, 'results.md')}
  write_points_csv(files['points.csv'], sweep, results)
  write_summary_csv(files['summary.csv'], sweep, groups)
  with open(files['results.md'], 'w', encoding='utf-8') as f:
    f.write(markdown_report(sweep, groups, results, sweep_spec=sweep_spec,
                            workdir=workdir))
  name = f'error_vs_{sweep.x}.png'
  if plot_error_vs_x(os.path.join(out, name), sweep, groups):
    files[name] = os.path.join(out, name)
  if plot_curves(os.path.join(out, 'curves.png'), sweep, results):
    files['curves.png'] = os.path.join(out, 'curves.png')
  return files


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m resnet_jax.sweep',
      description='Run, report and submit sweeps defined in experiments/*.py.')
  sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument('sweep', help='sweep file and argument, e.g. '
                      'experiments/depth_shortcut.py:preset=smoke')
  common.add_argument('--workdir', required=True,
                      help='parent folder; each point runs in WORKDIR/POINT')
  common.add_argument('--only', default=None,
                      help='comma-separated globs of point names, e.g. "d20-*,d56-A-*"')
  common.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override for every point (repeatable), '
                      'e.g. --set=data_dir=/data')

  p = sub.add_parser('run', parents=[common], help='run the points not finished yet')
  p.add_argument('--parallel', type=int, default=1, help='points run at once')
  p.add_argument('--index', type=int, default=None,
                 help='run only the I-th selected point (SLURM array tasks)')
  p.add_argument('--dry_run', action='store_true',
                 help='print the commands (and which points are finished); run nothing')

  p = sub.add_parser('list', parents=[common], help='the points and their state')

  p = sub.add_parser('report', parents=[common],
                     help='CSV, Markdown table and PNG plots of the final metrics')
  p.add_argument('--out', default=None, help='output folder (default WORKDIR/report)')

  p = sub.add_parser('slurm', parents=[common],
                     help='print a SLURM job-array script: one array task per point')
  p.add_argument('--sbatch', action='append', default=[], metavar='OPTION',
                 help='extra #SBATCH line (repeatable), e.g. --sbatch=--gres=gpu:1')
  p.add_argument('--setup', action='append', default=[], metavar='LINE',
                 help='shell line before the command (repeatable), e.g. '
                 '"source .venv/bin/activate"')
  p.add_argument('--max_concurrent', type=int, default=0,
                 help='at most this many array tasks at once (0 = no limit)')
  p.add_argument('--python', default=None, help='interpreter (default: this one)')
  return parser


def _points_for(args) -> tuple[Sweep, list[Point]]:
  sweep = load_sweep(args.sweep)
  points = with_overrides(sweep.points, parse_set(args.set))
  return sweep, select(points, args.only, getattr(args, 'index', None))


def _cmd_run(args) -> int:
  sweep, points = _points_for(args)
  workdir = os.path.abspath(args.workdir)
  if args.dry_run:
    for p in points:
      point_dir = os.path.join(workdir, p.name)
      done = ' (finished: would skip)' if is_finished(point_dir, p) else ''
      print(f'# {p.name}{done}')
      print(shlex.join(point_command(p, point_dir, sweep.source)))
    return 0
  print(f'sweep {sweep.name}: {len(points)} point(s) under {workdir}, '
        f'{args.parallel} at a time', flush=True)
  start = time.monotonic()
  outcomes, received = run_points(points, workdir, sweep_source=sweep.source,
                                  parallel=args.parallel,
                                  echo=lambda s: print(s, flush=True))
  print()
  print(summary_table(outcomes))
  print(f'wall time {time.monotonic() - start:.0f} s')
  if received is not None:
    return 128 + received
  if any(o.state in ('failed', 'busy') for o in outcomes):
    return EXIT_FAILED
  # A point stopped by a signal sent to it alone: not finished, rerun resumes it.
  return cli.EXIT_PREEMPTED if any(o.state == 'interrupted' for o in outcomes) else 0


def _cmd_list(args) -> int:
  sweep, points = _points_for(args)
  workdir = os.path.abspath(args.workdir)
  for p in points:
    status = read_status(os.path.join(workdir, p.name)) or {}
    state = status.get('state', 'not run')
    extra = ' '.join(f'{k}={_format_value(v)}' for k, v in p.overrides.items())
    print(f'{p.name:24s} {state:12s} {p.config} {extra}'.rstrip())
  print(f'{len(points)} point(s) in {sweep.name}')
  return 0


def _cmd_report(args) -> int:
  sweep, points = _points_for(args)
  out = args.out or os.path.join(args.workdir, 'report')
  files = write_report(sweep, points, args.workdir, out, sweep_spec=args.sweep)
  for path in files.values():
    print(path)
  return 0


def _cmd_slurm(args) -> int:
  sweep, points = _points_for(args)
  os.makedirs(args.workdir, exist_ok=True)  # SLURM writes its --output files there.
  sys.stdout.write(slurm_script(
      args.sweep, args.workdir, len(points), point_names=[p.name for p in points],
      only=args.only, set_items=args.set, python=args.python, sbatch=args.sbatch,
      setup=args.setup, max_concurrent=args.max_concurrent, job_name=sweep.name))
  return 0


COMMANDS = {'run': _cmd_run, 'list': _cmd_list, 'report': _cmd_report,
            'slurm': _cmd_slurm}


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point; returns the exit status (2 with a one-line error for bad input)."""
  args = _parser().parse_args(argv)
  try:
    return COMMANDS[args.command](args)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == '__main__':
  # Run the importable module's main, not this __main__ copy: sweep files import
  # resnet_jax.sweep, and their Sweep/Point must be the classes checked here.
  from resnet_jax import sweep as _sweep  # pylint: disable=g-import-not-at-top
  sys.exit(_sweep.main())
