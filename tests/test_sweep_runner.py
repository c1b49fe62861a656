"""Tests for resnet_jax.sweep.runner and `python -m resnet_jax.sweep run`.

Only `test_run_records_failures_then_skips_finished_points` trains for real (a
CIFAR ResNet-8 on 16x16 synthetic data for 4 steps); the others stand a short
Python script in for `resnet_jax.main`, to test what the runner does with an
exit status, a lock or a signal.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from resnet_jax import errors
from resnet_jax import sweep
from resnet_jax import workdir_lock
from resnet_jax.sweep import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE3 = os.path.join(REPO, 'experiments', 'imagenet_table3.py')

# A tiny training run: ResNet-8 on 16x16 synthetic data, 4 steps, final eval.
TINY = {
    'image_size': 16, 'num_train_steps': 4, 'batch_size': 8, 'eval_batch_size': 8,
    'num_eval_batches': 1, 'log_every_steps': 2, 'eval_every_steps': 4,
    'checkpoint_every_steps': 4, 'model.depth': 8,
}

# Stand-ins for resnet_jax.main, run as `python -c CODE POINT_DIR`.
EXIT_PREEMPTED_CHILD = f'import sys; sys.exit({errors.EXIT_PREEMPTED})'
# Adopts the point's lock, says so in the log, checks that a third process is
# refused while it holds the lock, and finishes with a final eval at step 4.
ADOPTING_CHILD = textwrap.dedent("""\
    import json, os, subprocess, sys
    from resnet_jax import workdir_lock
    point_dir = sys.argv[1]
    with workdir_lock.acquire(point_dir) as lock:
      other = subprocess.run(
          [sys.executable, '-c', 'import sys; from resnet_jax import workdir_lock; '
           'workdir_lock.acquire(sys.argv[1])', point_dir], capture_output=True, text=True)
      print(json.dumps({'adopted': lock.adopted, 'pid': os.getpid(),
                        'parent_pid': lock.record['parent']['pid'],
                        'other_rc': other.returncode,
                        'other_err': other.stderr}))
      with open(os.path.join(point_dir, 'metrics.jsonl'), 'w') as f:
        f.write(json.dumps({'step': 4, 'eval_top1': 0.25, 'eval_loss': 'nan'}) + '\\n')
    """)
# Waits for SIGTERM (from the runner), then exits as main does after its checkpoint.
WAITING_CHILD = textwrap.dedent(f"""\
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit({errors.EXIT_PREEMPTED}))
    open(os.path.join(sys.argv[1], 'ready'), 'w').close()
    time.sleep(60)
    """)


def _write_sweep(tmp_path, points_src: str) -> str:
  """A sweep file in tmp_path whose get_sweep returns the given points."""
  path = tmp_path / 'tiny_sweep.py'
  path.write_text(textwrap.dedent(f"""\
      from resnet_jax import sweep
      CONFIG = {os.path.join(REPO, 'configs', 'fake_data.py') + ':model=cifar20'!r}
      TINY = {TINY!r}

      def get_sweep(arg=None):
        return sweep.Sweep(points=[{points_src}])
      """))
  return str(path)


def _sweep_cli(*args, env=None, stand_in: str | None = None, **popen):
  """`python -m resnet_jax.sweep ARGS`, or the same CLI with `stand_in` (Python
  code run as `python -c CODE POINT_DIR`) in place of each point's main."""
  if stand_in is None:
    cmd = [sys.executable, '-m', 'resnet_jax.sweep', *args]
  else:
    script = textwrap.dedent(f"""\
        import sys
        from resnet_jax import cli
        from resnet_jax.sweep import __main__ as sweep_main, runner
        runner.point_command = lambda point, point_dir, *_: [
            sys.executable, '-c', {stand_in!r}, point_dir]
        sweep_main.define_flags()
        sys.argv = ['sweep'] + sys.argv[1:]
        cli.run(sweep_main.main)
        """)
    cmd = [sys.executable, '-c', script, *args]
  env = env or dict(os.environ, PYTHONPATH=REPO)
  if popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, text=True, **popen)
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)


def _statuses(workdir, names):
  return {n: json.loads((workdir / n / 'status.json').read_text()) for n in names}


def test_run_records_failures_then_skips_finished_points(tmp_path, child_env):
  # The points' processes inherit the environment: unoptimised XLA, shared cache.
  env = child_env()
  spec = _write_sweep(tmp_path, """
      sweep.Point('ok', CONFIG, dict(TINY)),
      sweep.Point('badshortcut', CONFIG, {**TINY, 'model.shortcut': 'Z'}),""")
  workdir = tmp_path / 'runs'
  # GNU-style: the flags may come before the positional arguments too.
  argv = ['run', f'--workdir={workdir}', spec]
  result = _sweep_cli(*argv, '--parallel=2', env=env)
  assert result.returncode == 1, result.stderr[-3000:]
  out = result.stdout
  status = _statuses(workdir, ['ok', 'badshortcut'])

  assert status['ok']['state'] == 'done' and status['ok']['returncode'] == 0
  assert status['ok']['final_step'] == 4
  assert 0.0 <= status['ok']['eval_top1'] <= 1.0
  for name in ('config.json', 'metrics.jsonl', 'log.txt', 'checkpoints'):
    assert (workdir / 'ok' / name).exists(), name
  # Caught by main itself: its exit code and last log lines are kept.
  assert status['badshortcut']['state'] == 'failed'
  assert status['badshortcut']['returncode'] == 2
  assert status['badshortcut']['reason'].startswith('error:')
  assert "'Z'" in status['badshortcut']['reason']
  assert status['badshortcut']['log_tail']
  assert '1 done, 1 failed' in out or ('1 done' in out and '1 failed' in out)
  # Every point's lock is released: the lock files are empty.
  for name in status:
    assert (workdir / name / '.lock').read_text() == '', name

  # Second run of the finished point: skipped, nothing rerun or rewritten.
  log_before = (workdir / 'ok' / 'log.txt').read_text()
  result = _sweep_cli(*argv, '--only=ok', env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'skipped' in result.stdout
  assert (workdir / 'ok' / 'log.txt').read_text() == log_before
  assert log_before.count('=== ') == 2  # One attempt: its start and exit lines.
  assert _statuses(workdir, ['ok'])['ok'] == status['ok']

  # Failed points are retried on the next run (and fail again).
  assert _sweep_cli(*argv, '--only=bad*', env=env).returncode == 1
  assert _statuses(workdir, ['badshortcut'])['badshortcut']['attempts'] == 2


def test_a_typo_in_a_point_refuses_the_sweep_before_anything_runs(tmp_path):
  spec = _write_sweep(tmp_path, """
      sweep.Point('ok', CONFIG, dict(TINY)),
      sweep.Point('typo', CONFIG, {**TINY, 'model.dept': 8}),""")
  workdir = tmp_path / 'runs'
  result = _sweep_cli('run', spec, f'--workdir={workdir}')
  assert result.returncode == errors.EXIT_BAD_INPUT, result.stderr
  assert result.stderr == ("error: point 'typo': unknown config field 'model.dept'; "
                           "did you mean 'model.depth'?\n")
  assert not (workdir / 'ok').exists()  # Nothing started.


def test_run_dry_run_prints_commands_and_runs_nothing(tmp_path):
  spec = _write_sweep(
      tmp_path, "sweep.Point('p', CONFIG, {'seed': 3, 'lr_boundaries_steps': (2, 3)})")
  workdir = tmp_path / 'runs'
  result = _sweep_cli('run', spec, f'--workdir={workdir}', '--dry_run')
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert '-m resnet_jax.main' in out and '--config.seed=3' in out
  assert "'--config.lr_boundaries_steps=(2, 3)'" in out
  assert f'--workdir={workdir}/p' in out
  assert not workdir.exists()


def test_run_refuses_a_workdir_of_a_different_config(tmp_path):
  spec = _write_sweep(tmp_path, "sweep.Point('p', CONFIG, {'seed': 1})")
  point_dir = tmp_path / 'runs' / 'p'
  point_dir.mkdir(parents=True)
  sweep.write_status(str(point_dir), {'state': 'done', 'spec': {
      'config': 'other.py', 'overrides': {}}})
  result = _sweep_cli('run', spec, f'--workdir={tmp_path / "runs"}')
  assert result.returncode == 2
  err = result.stderr
  assert err.startswith('error: ') and 'use another --workdir' in err
  assert len(err.strip().splitlines()) == 1


def test_point_commands_parse_back_to_the_same_config():
  """main's flags read the emitted --config.KEY=VALUE as configlib.load does."""
  script = textwrap.dedent("""\
      import sys
      from absl import flags
      from ml_collections import config_flags
      from resnet_jax import configlib, sweep
      sw = sweep.load_sweep(sys.argv[1])
      p = sw.points[int(sys.argv[2])]
      cmd = sweep.point_command(p, '/tmp/unused', sw.source)
      config_flags.DEFINE_config_file('config', None, '', lock_config=True)
      flags.DEFINE_string('workdir', None, '')
      sys.argv = ['main'] + cmd[3:]  # config_flags reads overrides from sys.argv.
      flags.FLAGS(sys.argv)
      want = configlib.load(sweep.resolve_config_path(p.config, sw.source), p.overrides)
      assert flags.FLAGS.config.to_dict() == want.to_dict()
      """)
  # Tuples of floats, dotted fields, strings with ':' and a float override.
  result = subprocess.run(
      [sys.executable, '-c', script, TABLE3 + ':data_dir=/d', '0'], cwd=REPO,
      capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]


def test_a_point_that_exits_preempted_is_interrupted_not_done(tmp_path):
  """main's status 75 (checkpoint saved on SIGTERM) leaves the point to resume."""
  spec = _write_sweep(tmp_path, "sweep.Point('p', CONFIG, dict(TINY)),")
  workdir = tmp_path / 'runs'
  # A stand-in for main stopped by a signal sent to it alone: the sweep was not.
  result = _sweep_cli('run', spec, f'--workdir={workdir}', stand_in=EXIT_PREEMPTED_CHILD)
  assert result.returncode == errors.EXIT_PREEMPTED, result.stderr
  status = _statuses(workdir, ['p'])['p']
  assert status['state'] == 'interrupted'
  assert status['returncode'] == errors.EXIT_PREEMPTED
  assert 'interrupted' in result.stdout


def test_preempted_is_read_from_the_exit_status_not_the_log(tmp_path, monkeypatch):
  # Exit 0 with a final eval is done, whatever the log says; exit 75 is
  # interrupted even with a final eval (main stopped before its last save).
  says_preempted = ("import json, os, sys; print('step=4, preempted=True'); "
                    "open(os.path.join(sys.argv[1], 'metrics.jsonl'), 'w').write("
                    "json.dumps({'step': 4, 'eval_top1': 0.5}) + '\\n'); sys.exit(CODE)")
  points = [sweep.Point('zero', os.path.join(REPO, 'configs', 'fake_data.py'), dict(TINY)),
            sweep.Point('tempfail', os.path.join(REPO, 'configs', 'fake_data.py'),
                        dict(TINY))]
  codes = {'zero': 0, 'tempfail': errors.EXIT_PREEMPTED}
  monkeypatch.setattr(runner, 'point_command', lambda point, point_dir, *_: [
      sys.executable, '-c', says_preempted.replace('CODE', str(codes[point.name])),
      point_dir])
  lines = []
  outcomes, received = sweep.run_points(points, str(tmp_path), echo=lines.append)
  assert received is None
  assert [o.state for o in outcomes] == ['done', 'interrupted']
  assert outcomes[0].eval_top1 == 0.5 and outcomes[0].step == 4
  assert sweep.exit_status(outcomes, received) == errors.EXIT_PREEMPTED
  assert any(l.endswith('zero: done, in 0 s, step 4, test err 50.00 %') for l in lines)


def test_the_point_lock_is_handed_to_main(tmp_path):
  """The runner holds each point's lock and main adopts it (same mechanism)."""
  spec = _write_sweep(tmp_path, "sweep.Point('p', CONFIG, dict(TINY)),")
  workdir = tmp_path / 'runs'
  proc = _sweep_cli('run', spec, f'--workdir={workdir}', stand_in=ADOPTING_CHILD,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  log = (workdir / 'p' / 'log.txt').read_text()
  child = json.loads(next(l for l in log.splitlines() if l.startswith('{')))
  assert child['adopted'] is True
  assert child['parent_pid'] == proc.pid  # The runner took the lock first.
  # While main held the point, a second process was refused, main named.
  assert child['other_rc'] != 0
  assert f'is in use by pid {child["pid"]} on ' in child['other_err']
  status = _statuses(workdir, ['p'])['p']
  assert status['state'] == 'done' and status['final_step'] == 4
  assert status['eval_top1'] == 0.25
  assert (workdir / 'p' / '.lock').read_text() == ''  # Released by the runner.
  assert 'done' in out


def test_a_point_held_by_another_process_is_busy(tmp_path):
  points = [sweep.Point('p', os.path.join(REPO, 'configs', 'fake_data.py'))]
  with workdir_lock.acquire(str(tmp_path / 'p')):
    outcomes, received = sweep.run_points(points, str(tmp_path), echo=lambda _: None)
  assert outcomes[0].state == 'busy'
  assert outcomes[0].note.startswith(f'held by pid {os.getpid()} on ')
  assert sweep.exit_status(outcomes, received) == errors.EXIT_FAILED
  assert not (tmp_path / 'p' / 'status.json').exists()  # Not ours to write.


def test_a_lock_left_by_a_killed_runner_is_taken_over(tmp_path, monkeypatch):
  point_dir = tmp_path / 'p'
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from resnet_jax import workdir_lock; '
       'workdir_lock.acquire(sys.argv[1]); print("locked", flush=True); time.sleep(60)',
       str(point_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline() == 'locked\n'
  holder.kill()  # SIGKILL: no clean-up ran.
  holder.wait()
  monkeypatch.setattr(runner, 'point_command', lambda point, point_dir, *_: [
      sys.executable, '-c', ADOPTING_CHILD, point_dir])
  points = [sweep.Point('p', os.path.join(REPO, 'configs', 'fake_data.py'), dict(TINY))]
  outcomes, _ = sweep.run_points(points, str(tmp_path), echo=lambda _: None)
  assert outcomes[0].state == 'done'
  log = (point_dir / 'log.txt').read_text()
  assert f'=== took over the lock left by pid {holder.pid} on ' in log


def test_sigterm_to_the_runner_stops_its_points_and_starts_no_more(tmp_path):
  spec = _write_sweep(tmp_path, """
      sweep.Point('first', CONFIG, dict(TINY)),
      sweep.Point('second', CONFIG, dict(TINY)),""")
  workdir = tmp_path / 'runs'
  proc = _sweep_cli('run', spec, f'--workdir={workdir}', stand_in=WAITING_CHILD,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 60
  while not (workdir / 'first' / 'ready').exists():
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert 'sweep: got SIGTERM: stopping the running points' in err
  status = _statuses(workdir, ['first'])['first']
  assert status['state'] == 'interrupted'
  assert status['returncode'] == errors.EXIT_PREEMPTED  # The child got the signal.
  assert not (workdir / 'second').exists()
  assert '1 interrupted, 1 not started' in out


def test_child_env():
  env = runner.child_env(parallel=1)
  assert env['PYTHONPATH'].split(os.pathsep)[0] == REPO
  assert 'XLA_PYTHON_CLIENT_PREALLOCATE' not in env or (
      env['XLA_PYTHON_CLIENT_PREALLOCATE'] == os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE'))
  # Several points on one GPU share its memory.
  assert runner.child_env(parallel=2)['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'


@pytest.mark.parametrize('states, received, status', [
    (['done', 'skipped'], None, 0),
    (['done', 'failed', 'interrupted'], None, 1),
    (['busy'], None, 1),
    (['done', 'interrupted'], None, 75),
    (['interrupted', 'not started'], signal.SIGINT, 128 + 2),
])
def test_exit_status(states, received, status):
  outcomes = [sweep.Outcome(sweep.Point(f'p{i}', 'c.py'), s) for i, s in enumerate(states)]
  assert sweep.exit_status(outcomes, received) == status
