"""Running points: one `resnet_jax.main` process per point, locked, resumable.

`run_points` starts the points not finished yet, `parallel` at a time. Each
point's lock (`resnet_jax.workdir_lock`, the same one `main` takes) is taken
here and handed to the child, so no two runners ever train one point and a
point left by a killed runner is taken over. A failure is recorded in the
point's status.json and the sweep goes on. What a point's exit meant comes
from its exit status alone (`resnet_jax.errors`: 0 finished, 75 stopped by a
signal after saving a checkpoint, anything else failed) and its final eval in
metrics.jsonl.
"""

import dataclasses
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from resnet_jax import configlib
from resnet_jax import signals
from resnet_jax import workdir_lock
from resnet_jax.errors import ConfigError
from resnet_jax.errors import EXIT_BAD_INPUT
from resnet_jax.errors import EXIT_FAILED
from resnet_jax.errors import EXIT_OK
from resnet_jax.errors import EXIT_PREEMPTED
from resnet_jax.sweep import state
from resnet_jax.sweep.grid import Point

# The directory holding the `resnet_jax` package: children import it from here.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def format_value(value: Any) -> str:
  """A Python value as ml_collections' config flags parse it back."""
  if isinstance(value, (list, tuple)):
    return '(' + ', '.join(repr(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def load_configs(points: Sequence[Point], sweep_source: str = '',
                 workdir: str | None = None) -> dict[str, Any]:
  """Each point's config (its file with its overrides), checked before anything runs.

  A typo in a sweep's overrides is bad input of the whole sweep: refused at
  once, not found point by point.

  Args:
    points: the points.
    sweep_source: the sweep file (relative config paths are looked up from it).
    workdir: with it, points that finished there are not loaded (nothing will
      run them, and their config may predate the code).

  Returns:
    {point name: config}.

  Raises:
    ConfigError: naming the point: its config file is missing or raises, or an
      override names an unknown field ("did you mean ...") or has the wrong type.
  """
  configs = {}
  for p in points:
    if workdir is not None and state.is_finished(os.path.join(workdir, p.name), p):
      continue
    try:
      configs[p.name] = configlib.load(resolve_config_path(p.config, sweep_source),
                                       p.overrides)
    except ConfigError as e:
      raise ConfigError(f'point {p.name!r}: {e}') from None
  return configs


def point_command(point: Point, point_dir: str, sweep_source: str = '',
                  python: str | None = None) -> list[str]:
  """The `resnet_jax.main` command line that runs `point` in `point_dir`."""
  cmd = [python or sys.executable, '-m', 'resnet_jax.main',
         f'--config={resolve_config_path(point.config, sweep_source)}',
         f'--workdir={os.path.abspath(point_dir)}']
  cmd += [f'--config.{k}={format_value(v)}' for k, v in point.overrides.items()]
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


def exit_status(outcomes: Sequence[Outcome], received: int | None) -> int:
  """`run`'s exit status: 128+N when signal N stopped the sweep, else 1 when a
  point failed (or another runner held one), else 75 when a point was stopped
  by a signal sent to it alone (rerun to resume it), else 0."""
  if received is not None:
    return 128 + received
  if any(o.state in ('failed', 'busy') for o in outcomes):
    return EXIT_FAILED
  if any(o.state == 'interrupted' for o in outcomes):
    return EXIT_PREEMPTED
  return EXIT_OK


class _Job:
  """A point's running `main` process with its lock, log and status."""

  def __init__(self, point: Point, point_dir: str, command: list[str],
               lock: workdir_lock.WorkdirLock, expected: int | None,
               env: Mapping[str, str]):
    self.point, self.point_dir, self.command = point, point_dir, command
    self.lock, self.expected = lock, expected
    previous = state.read_status(point_dir) or {}
    self.status = {
        'name': point.name, 'state': 'running', 'spec': point.spec(),
        'command': command, 'attempts': int(previous.get('attempts', 0)) + 1,
        'started': state.now(), 'host': socket.gethostname(),
        'slurm_job': os.environ.get('SLURM_JOB_ID', ''),
        'total_wall_s': float(previous.get('total_wall_s', 0.0)),
    }
    state.write_status(point_dir, self.status)
    self.start = time.monotonic()
    self.log = open(os.path.join(point_dir, state.LOG_FILE), 'a', encoding='utf-8')
    self.log_offset = self.log.tell()  # This attempt's output starts here.
    self.log.write(f'=== {self.status["started"]} attempt {self.status["attempts"]} '
                   f'on {self.status["host"]}: {shlex.join(command)}\n')
    if lock.previous:
      self.log.write(f'=== took over the lock left by {workdir_lock.describe(lock.previous)}'
                     ', which is no longer running\n')
    self.log.flush()
    # Own session: a Ctrl-C reaches only the runner, which forwards exactly one
    # signal, so main checkpoints instead of seeing two and quitting at once.
    # The child inherits the lock (main adopts it), so it stays held if the
    # runner dies first.
    self.proc = subprocess.Popen(
        command, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**env, **lock.child_env()}, start_new_session=True, pass_fds=(lock.fd,))

  def finish(self, interrupted: bool) -> Outcome:
    """Records the exit of the process in status.json; releases the lock."""
    rc = self.proc.returncode
    wall = time.monotonic() - self.start
    self.log.write(f'=== {state.now()} exit code {rc} after {wall:.0f} s\n')
    self.log.close()
    tail = state.log_tail(self.point_dir, offset=self.log_offset)
    final = state.final_eval(state.read_metrics(self.point_dir), self.expected)
    if rc == EXIT_OK and final is not None:
      point_state, note = 'done', ''
    elif interrupted or rc == EXIT_PREEMPTED:
      point_state, note = 'interrupted', 'stopped by a signal; rerun to resume'
    elif rc == EXIT_OK:
      point_state = 'failed'
      note = (f'exited 0 without an eval row at the final step '
              f'{self.expected or "(last logged)"} in {state.METRICS_FILE}')
    elif rc < 0:
      # Killed from outside without a chance to say why; often the OOM killer.
      point_state = 'failed'
      note = f'killed by {signal.Signals(-rc).name} (out of memory?); rerun to resume'
    else:
      point_state, note = 'failed', state.failure_reason(tail)
    self.status.update(
        state=point_state, returncode=rc, finished=state.now(), wall_s=round(wall, 1),
        total_wall_s=round(self.status['total_wall_s'] + wall, 1), reason=note,
        log_tail=tail if point_state != 'done' else [])
    if final is not None:
      self.status.update(final_step=int(final['step']),
                         eval_top1=state.number(final.get('eval_top1')),
                         eval_top5=state.number(final.get('eval_top5')))
    state.write_status(self.point_dir, self.status)
    self.lock.release()
    return Outcome(self.point, point_state, step=self.status.get('final_step'),
                   eval_top1=self.status.get('eval_top1'), wall_s=wall, note=note)


def _fail_without_running(point: Point, point_dir: str, message: str) -> Outcome:
  """Records a point whose config does not even load (no process started)."""
  previous = state.read_status(point_dir) or {}
  with open(os.path.join(point_dir, state.LOG_FILE), 'a', encoding='utf-8') as f:
    f.write(f'=== {state.now()} not started: error: {message}\n')
  state.write_status(point_dir, {
      'name': point.name, 'state': 'failed', 'spec': point.spec(),
      'returncode': EXIT_BAD_INPUT, 'attempts': int(previous.get('attempts', 0)) + 1,
      'started': state.now(), 'finished': state.now(), 'reason': f'error: {message}',
      'log_tail': [f'error: {message}']})
  return Outcome(point, 'failed', note=f'error: {message}')


def child_env(parallel: int) -> dict[str, str]:
  """The environment of the points' processes."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (PACKAGE_ROOT, env.get('PYTHONPATH', '')) if p)
  if parallel > 1:
    # Several processes on one GPU: JAX would otherwise grab 75 % of it each.
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  return env


def _start(point: Point, workdir: str, sweep_source: str, env: Mapping[str, str],
           config) -> '_Job | Outcome':
  """Starts a point's process, or says why it needs none (finished, busy, bad config)."""
  point_dir = os.path.join(workdir, point.name)
  try:
    lock = workdir_lock.acquire(point_dir)
  except workdir_lock.WorkdirBusyError as e:
    holder = workdir_lock.describe(e.holder) if e.holder else 'another process'
    return Outcome(point, 'busy', note=f'held by {holder}')
  if state.is_finished(point_dir, point):
    lock.release()
    status = state.read_status(point_dir)
    return Outcome(point, 'skipped', step=status.get('final_step'),
                   eval_top1=status.get('eval_top1'), wall_s=status.get('total_wall_s'),
                   note='finished before')
  try:
    # The config was loaded before the sweep started (`load_configs`); when the
    # point had finished then, it is loaded now (it was rerun since).
    if config is None:
      config = configlib.load(resolve_config_path(point.config, sweep_source),
                              point.overrides)
    command = point_command(point, point_dir, sweep_source)
  except ConfigError as e:
    lock.release()
    return _fail_without_running(point, point_dir, str(e))
  try:
    # The run's length (when given in steps) tells what "finished" means.
    return _Job(point, point_dir, command, lock, state.expected_steps(config), env)
  except OSError as e:  # The interpreter could not be started.
    lock.release()
    return _fail_without_running(point, point_dir, f'cannot start {command[0]}: {e}')


def run_points(points: Sequence[Point], workdir: str, *, sweep_source: str = '',
               parallel: int = 1, poll_s: float = 0.2,
               echo: Callable[[str], None] = print) -> tuple[list[Outcome], int | None]:
  """Runs the points not finished yet, `parallel` at a time.

  SIGINT, SIGTERM and SIGHUP (as SIGTERM) are forwarded to the running points,
  which checkpoint and stop; no new point starts after one.

  Returns:
    (outcomes in point order, the first signal that stopped the sweep or None).

  Raises:
    ConfigError: `parallel` < 1, a point's config does not load (a typo in its
      overrides), or a point's workdir holds a different config. Nothing has
      started then.
  """
  if parallel < 1:
    raise ConfigError(f'--parallel={parallel} must be at least 1')
  for p in points:
    state.check_workdir_matches(os.path.join(workdir, p.name), p)
  configs = load_configs(points, sweep_source, workdir)
  env = child_env(parallel)
  outcomes: dict[str, Outcome] = {}
  pending = list(points)
  jobs: list[_Job] = []
  tag = {p.name: f'[{i + 1}/{len(points)}] {p.name}' for i, p in enumerate(points)}

  def forward(signum: int) -> None:
    # os.write, not print: print is not reentrant if the signal lands inside one.
    os.write(2, (f'sweep: got {signal.Signals(signum).name}: stopping the running '
                 'points (they checkpoint), starting no more; rerun to resume.\n').encode())
    forwarded = signal.SIGTERM if signum == signal.SIGHUP else signum
    for job in jobs:
      if job.proc.poll() is None:
        job.proc.send_signal(forwarded)

  with signals.SignalFlag((signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
                          on_signal=forward) as stop:
    while pending or jobs:
      while pending and len(jobs) < parallel and stop.received is None:
        point = pending.pop(0)
        job_or_outcome = _start(point, workdir, sweep_source, env,
                                configs.get(point.name))
        if isinstance(job_or_outcome, Outcome):
          outcomes[point.name] = job_or_outcome
          echo(f'{tag[point.name]}: {_describe(job_or_outcome)}')
        else:
          jobs.append(job_or_outcome)
          echo(f'{tag[point.name]}: started (log: '
               f'{os.path.join(job_or_outcome.point_dir, state.LOG_FILE)})')
      for job in list(jobs):
        if job.proc.poll() is not None:
          jobs.remove(job)
          outcome = job.finish(interrupted=stop.received is not None)
          outcomes[job.point.name] = outcome
          echo(f'{tag[job.point.name]}: {_describe(outcome)}')
      if jobs:
        time.sleep(poll_s)
      if stop.received is not None and not jobs:
        break
  for p in pending:
    outcomes[p.name] = Outcome(p, 'not started')
  return [outcomes[p.name] for p in points], stop.received


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
