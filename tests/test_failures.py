"""Failures at any moment, as a user meets them: one line, the documented exit status
(resnet_jax/errors.py), nothing lost.

One test per failure: a full disk, a signal at start-up, a second Ctrl-C, a broken
config or sweep file, unusable checkpoints, a truncated checkpoint file, a non-finite
loss, an export over an existing file. Each asserts the one line on stderr (no
traceback) and the exit status, and, where there was a state to keep, that the run
resumed afterwards ends where an uninterrupted one does, bit for bit.

The runs are `python -m resnet_jax.main` on test_checkpoint's tiny synthetic setup,
sharing its compilation cache (child_env). Where a moment must be hit exactly, the same
entry point runs with a hook (`ENTRY`): a start-up stage that waits for the test's
signal, or a checkpoint commit held back.

A full disk is a real one where a small tmpfs can be mounted (as root, as in this
project's sandbox); elsewhere the same failures are injected: ENOSPC from the array
writes of one checkpoint, and from every write of the lock file.
"""

import errno
import glob
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from resnet_jax import checkpoint
from resnet_jax import configlib
from resnet_jax import errors
from resnet_jax import metric_writers
from resnet_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/fake_data.py:model=cifar20'
# test_checkpoint's TINY (same compiled programs), 8 steps, a checkpoint every 2.
TINY = {'model.depth': 8, 'image_size': 16, 'batch_size': 16, 'eval_batch_size': 16,
        'num_eval_batches': 2, 'log_every_steps': 1, 'warmup_steps': 0,
        'placement': 'device', 'augment': 'cifar', 'num_train_steps': 8,
        'checkpoint_every_steps': 2, 'eval_every_steps': 8}
STEPS = 8

pytestmark = pytest.mark.usefixtures('compile_cache')

# resnet_jax.main with hooks chosen by environment variables (see the module docstring).
ENTRY = textwrap.dedent('''
    import errno, importlib, os, sys, time

    def wait_in(spec):  # 'module:Class.method': marks, then waits for a signal there.
      module, _, attr = spec.partition(':')
      owner_name, _, name = attr.rpartition('.')
      owner = importlib.import_module(module)
      owner = getattr(owner, owner_name) if owner_name else owner
      original = getattr(owner, name)
      def waiting(*args, **kwargs):
        open(os.environ['MARKER'], 'w').close()
        time.sleep(600)
        return original(*args, **kwargs)
      setattr(owner, name, waiting)

    def hold_commit(step):  # The save of `step` never completes.
      from orbax.checkpoint._src.path import atomicity
      finalize = atomicity.AtomicRenameTemporaryPath.finalize
      async def held(self):
        if os.path.basename(str(self.get_final())) == step:
          open(os.environ['MARKER'], 'w').close()
          time.sleep(600)
        return await finalize(self)
      atomicity.AtomicRenameTemporaryPath.finalize = held

    def no_space_for(step):  # The array writes of `step` find the disk full.
      from orbax.checkpoint._src.serialization import type_handlers
      write = type_handlers.NumpyHandler._open_and_write
      async def full(self, value, tspec, ts_context):
        if f'/{step}.orbax-checkpoint-tmp/' in str(tspec):
          raise ValueError(f'RESOURCE_EXHAUSTED: Error writing in {tspec}: '
                           "No space left on device [os_error_code='28']")
        return await write(self, value, tspec, ts_context)
      type_handlers.NumpyHandler._open_and_write = full

    def no_space():  # Every write of the lock file finds the disk full.
      def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      os.pwrite = full

    if os.environ.get('WAIT_IN'):
      wait_in(os.environ['WAIT_IN'])
    if os.environ.get('HOLD_COMMIT'):
      hold_commit(os.environ['HOLD_COMMIT'])
    if os.environ.get('NO_SPACE_FOR'):
      no_space_for(os.environ['NO_SPACE_FOR'])
    if os.environ.get('NO_SPACE'):
      no_space()
    from resnet_jax import cli, main
    sys.argv = ['main'] + sys.argv[1:]
    cli.run(main.main, main.define_flags, stop_on_signals=True)
''')


def tiny_config(**overrides):
  return configlib.load(os.path.join(REPO, CONFIG), {**TINY, **overrides})


def main(child_env, workdir, *flags, hooks=None, popen=False, **overrides):
  """`python -m resnet_jax.main` on the tiny setup (through ENTRY when hooks are set)."""
  args = [f'--config={CONFIG}', f'--workdir={workdir}',
          *[f'--config.{k}={v}' for k, v in {**TINY, **overrides}.items()], *flags]
  cmd = ([sys.executable, '-c', ENTRY, *args] if hooks
         else [sys.executable, '-m', 'resnet_jax.main', *args])
  env = child_env(**(hooks or {}))
  if popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)


def one_line(stderr: str, returncode: int, status: int) -> str:
  """The one line that says what happened (asserting it is the only one), and the status."""
  assert 'Traceback' not in stderr and 'Exception ignored' not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith(('error: ', 'Preempted by '))]
  assert returncode == status and len(lines) == 1, (returncode, stderr[-3000:])
  return lines[0]


def wait_for(path: str, proc: subprocess.Popen) -> None:
  deadline = time.monotonic() + 240
  while not os.path.exists(path):
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      raise AssertionError('no marker:\n' + proc.communicate()[1][-3000:])
    time.sleep(0.05)


def resume(workdir, reference, from_step: int) -> None:
  """Reruns the run (in this process, to be quick) and checks where it ends."""
  rows = len(metric_writers.read_jsonl(str(workdir / 'metrics.jsonl')))
  result = train.train_and_evaluate(tiny_config(), str(workdir))
  assert result['step'] == STEPS and not result['preempted']
  resumed = metric_writers.read_jsonl(str(workdir / 'metrics.jsonl'))[rows:]
  assert min(r['step'] for r in resumed) == from_step + 1
  assert_equals_reference(workdir, reference)


def assert_equals_reference(workdir, reference) -> None:
  state, record = checkpoint.read_state(str(workdir))
  assert record['step'] == STEPS
  ref_leaves, leaves = jax.tree.leaves(reference['state']), jax.tree.leaves(state)
  assert len(leaves) == len(ref_leaves)
  for a, b in zip(ref_leaves, leaves):
    assert np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b)


@pytest.fixture(scope='module')
def reference(tmp_path_factory, compile_cache):
  """An uninterrupted run of the tiny setup: its workdir (checkpoints 4, 6, 8) and state."""
  del compile_cache
  workdir = tmp_path_factory.mktemp('reference') / 'run'
  train.train_and_evaluate(tiny_config(), str(workdir))
  state, _ = checkpoint.read_state(str(workdir))
  return {'workdir': workdir, 'state': state}


def copy_of(reference, tmp_path, *, without=()) -> str:
  """The reference workdir as a crashed run left it: without the given steps."""
  workdir = tmp_path / 'run'
  shutil.copytree(reference['workdir'], workdir)
  for step in without:
    shutil.rmtree(workdir / 'checkpoints' / str(step))
  return workdir


def _tree_bytes(path, page=4096) -> int:
  """What the files under `path` take on a tmpfs (whole pages)."""
  files = [p for p in glob.glob(f'{path}/**', recursive=True) if os.path.isfile(p)]
  return sum(-(-os.path.getsize(p) // page) * page for p in files)


def _mount_tmpfs(path, size: int) -> bool:
  os.makedirs(path, exist_ok=True)
  if os.geteuid() != 0:
    return False
  return subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                        capture_output=True).returncode == 0


def _fill(path) -> None:
  """Writes a file in `path` until the filesystem is full (it may be full already)."""
  try:
    with open(os.path.join(path, 'filler'), 'wb') as f:
      while True:
        f.write(b'\0' * 65536)
        f.flush()
  except OSError as e:
    assert e.errno == errno.ENOSPC


# --- 1. A full disk --------------------------------------------------------------------


def test_a_full_disk_stops_at_once_keeps_the_last_checkpoint_and_resumes(
    reference, child_env, tmp_path):
  disk = tmp_path / 'disk'
  # Room for the run's files and one checkpoint, not two: the save of step 4 (while
  # step 2 is still kept) finds the disk full.
  ref = reference['workdir']
  one = _tree_bytes(ref / 'checkpoints' / str(STEPS))
  rest = _tree_bytes(ref) - _tree_bytes(ref / 'checkpoints')
  real = _mount_tmpfs(disk, rest + one * 3 // 2)
  workdir = disk / 'run'
  try:
    run = main(child_env, workdir, hooks=None if real else {'NO_SPACE_FOR': '4'})
    line = one_line(run.stderr, run.returncode, errors.EXIT_BAD_INPUT)
    assert line.startswith(f'error: no space left on device: the checkpoint of step 4 '
                           f'could not be written to {workdir / "checkpoints"}, so the run '
                           'stopped. The checkpoint of step 2 '), line
    assert line.endswith('then rerun the same command to resume from step 2'), line
    assert os.listdir(workdir / 'checkpoints') == ['2']  # The partial save is gone.
    rows = metric_writers.read_jsonl(str(workdir / 'metrics.jsonl'))
    assert max(r['step'] for r in rows) < STEPS  # Stopped then, not at the end.

    # Full from the start: the first write (the lock) fails; nothing changes.
    if real:
      _fill(disk)
    run = main(child_env, workdir, hooks=None if real else {'NO_SPACE': '1'})
    line = one_line(run.stderr, run.returncode, errors.EXIT_BAD_INPUT)
    assert line == (f'error: no space left on device: cannot write the lock file '
                    f'{workdir / ".lock"}, so nothing was started or changed in {workdir}. '
                    'Free space there (or use another --workdir), then rerun the same '
                    'command')
    assert os.listdir(workdir / 'checkpoints') == ['2']

    # With room again, the same run resumes from step 2.
    if real:
      if os.path.exists(disk / 'filler'):
        os.remove(disk / 'filler')
      subprocess.run(['mount', '-o', 'remount,size=64m', str(disk)], check=True)
    resume(workdir, reference, from_step=2)
  finally:
    if real:
      subprocess.run(['umount', str(disk)], check=True)


# --- 2. A signal at start-up -----------------------------------------------------------


@pytest.mark.parametrize('where, sig, doing, resumes', [
    ('resnet_jax.train:setup_experiment', signal.SIGTERM, 'preparing the data', False),
    ('resnet_jax.train:Experiment.compile_train_step', signal.SIGINT,
     'compiling the train step', False),
    ('resnet_jax.checkpoint.manager:CheckpointManager.restore_latest', signal.SIGTERM,
     'restoring the checkpoint', True),
])
def test_a_signal_at_start_up_stops_at_once_with_75(reference, child_env, tmp_path, where,
                                                    sig, doing, resumes):
  workdir = copy_of(reference, tmp_path, without=[STEPS]) if resumes else tmp_path / 'run'
  marker = str(tmp_path / 'waiting')
  proc = main(child_env, workdir, hooks={'WAIT_IN': where, 'MARKER': marker}, popen=True)
  wait_for(marker, proc)
  proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=60)
  line = one_line(stderr, proc.returncode, errors.EXIT_PREEMPTED)
  name = signal.Signals(sig).name
  after = 'it resumes from step 6' if resumes else 'it starts from step 0'
  assert line == (f'Preempted by {name} while {doing}, before any training step: nothing '
                  f'to save, nothing lost; rerun the same command ({after}).')
  assert (workdir / '.lock').read_text() == ''  # Released on the way out.
  if resumes:
    resume(workdir, reference, from_step=6)


# --- 3. A second Ctrl-C ----------------------------------------------------------------


def test_a_second_ctrl_c_quits_at_once_with_130_and_the_last_checkpoint_resumes(
    reference, child_env, tmp_path):
  workdir = tmp_path / 'run'
  marker = str(tmp_path / 'saving')
  # The save of step 4 never completes: the first Ctrl-C's save waits behind it.
  proc = main(child_env, workdir, hooks={'HOLD_COMMIT': '4', 'MARKER': marker},
              popen=True)
  wait_for(marker, proc)
  proc.send_signal(signal.SIGINT)
  time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=60)
  # The process dies of SIGINT: a shell reports 130 and stops its script.
  line = one_line(stderr, proc.returncode, -signal.SIGINT)
  assert 128 - proc.returncode == errors.EXIT_INTERRUPTED
  assert line == ('error: interrupted again: quit at once, without waiting for a '
                  'checkpoint in progress. The checkpoint of step 2 '
                  f'({workdir / "checkpoints" / "2"}) is kept: rerun the same command to '
                  'resume from it')
  assert (workdir / '.lock').read_text() == ''
  resume(workdir, reference, from_step=2)


# --- 4. A broken config or sweep file --------------------------------------------------


@pytest.mark.parametrize('tool, source, expected', [
    ('main', 'def get_config(arg=None):\n  return (\n',
     "line 2: SyntaxError: '(' was never closed"),
    ('main', 'def get_config(arg=None):\n  return dict(depth=dept)\n',
     "line 2: NameError: name 'dept' is not defined"),
    ('main', 'import no_such_module\n', "line 1: ModuleNotFoundError: No module named "
     "'no_such_module'"),
    ('sweep', 'from resnet_jax import sweep\n\ndef get_sweep(arg=None):\n'
     '  return sweep.Sweep(points=[], xx=1)\n',
     "line 4: TypeError: Sweep.__init__() got an unexpected keyword argument 'xx'"),
])
def test_an_error_in_a_config_or_sweep_file_is_one_line_naming_it(tmp_path, tool, source,
                                                                  expected):
  path = tmp_path / 'broken.py'
  path.write_text(source)
  if tool == 'main':
    cmd = ['-m', 'resnet_jax.main', f'--config={path}', f'--workdir={tmp_path / "run"}']
    prefix = f'error: bad config: config file {path}, '
  else:
    cmd = ['-m', 'resnet_jax.sweep', 'run', str(path), f'--workdir={tmp_path / "runs"}']
    prefix = f'error: sweep file {path}, '
  run = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
  assert run.stderr == f'{prefix}{expected}\n'
  assert run.returncode == errors.EXIT_BAD_INPUT
  assert not os.path.exists(tmp_path / 'run') and not os.path.exists(tmp_path / 'runs')


# --- 5. Every checkpoint unusable ------------------------------------------------------


def test_a_workdir_whose_checkpoints_are_all_unusable_is_refused(reference, child_env,
                                                                  tmp_path):
  workdir = copy_of(reference, tmp_path)
  for metadata in glob.glob(str(workdir / 'checkpoints' / '*' / 'state' / '_METADATA')):
    with open(metadata, 'w') as f:
      f.write('garbage')
  rows = (workdir / 'metrics.jsonl').read_text()
  run = main(child_env, workdir)
  line = one_line(run.stderr, run.returncode, errors.EXIT_BAD_INPUT)
  assert line.startswith(f'error: no usable checkpoint in {workdir / "checkpoints"}: 3 '
                         'checkpoint(s) could not be read (step 8: '), line
  assert line.endswith('and were moved aside: corrupt-8, corrupt-6, corrupt-4. Training did '
                       'not start, so as not to start over from step 0 unasked: rerun with '
                       '--allow_fresh_start to train this workdir from step 0 (the moved '
                       'checkpoints stay), or use another --workdir'), line
  assert (workdir / 'metrics.jsonl').read_text() == rows  # Nothing trained.
  # Rerunning is refused the same way; starting afresh is a choice.
  with pytest.raises(errors.ConfigError, match='an earlier run moved every checkpoint '
                     'aside as unreadable: corrupt-8, corrupt-6, corrupt-4'):
    train.train_and_evaluate(tiny_config(), str(workdir))
  train.train_and_evaluate(tiny_config(), str(workdir), allow_fresh_start=True)
  assert_equals_reference(workdir, reference)  # From step 0: the same run again.
  assert sorted(os.listdir(workdir / 'checkpoints'))[-3:] == [
      'corrupt-4', 'corrupt-6', 'corrupt-8']


# --- 6. A truncated checkpoint file ----------------------------------------------------


def test_a_truncated_checkpoint_is_skipped_quietly_and_the_one_before_resumes(
    reference, child_env, tmp_path):
  workdir = copy_of(reference, tmp_path, without=[STEPS])
  data = [p for p in glob.glob(str(workdir / 'checkpoints' / '6' / 'state' / '**'),
                               recursive=True) if os.path.isfile(p)]
  with open(max(data, key=os.path.getsize), 'r+b') as f:
    f.truncate(1000)
  run = main(child_env, workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  for noise in ('Event loop is closed', 'Traceback', 'Exception ignored'):
    assert noise not in run.stderr, run.stderr[-3000:]
  assert f'Skipping checkpoint {workdir / "checkpoints" / "6"}: ' in run.stderr
  assert 'Resumed from step 4 ' in run.stderr
  assert_equals_reference(workdir, reference)


# --- 7. A non-finite loss --------------------------------------------------------------


def test_a_non_finite_loss_says_what_to_change_and_what_is_kept(tmp_path):
  config = tiny_config(optimizer='sgd', learning_rate=1e9, checkpoint_every_steps=100)
  with pytest.raises(errors.NonFiniteLossError) as e:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  message = str(e.value)
  # A float32 run without clipping and before its first checkpoint.
  assert message.endswith(': lower --config.learning_rate (now 1e+09), or set '
                          '--config.grad_clip_norm. No checkpoint was written before it: '
                          'rerun with the change'), message
  assert 'dtype' not in message


# --- 9. An export over an existing file ------------------------------------------------


def test_export_refuses_to_overwrite_unless_told(reference, tmp_path):
  output = tmp_path / 'model.safetensors'
  output.write_bytes(b'keep')

  def export(*flags):
    return subprocess.run(
        [sys.executable, '-m', 'resnet_jax.weights', 'export', '--source=torch_cifar',
         f'--checkpoint={reference["workdir"]}', f'--output={output}', *flags],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu'))

  run = export()
  assert one_line(run.stderr, run.returncode, errors.EXIT_BAD_INPUT) == (
      f'error: {output} exists: pass --overwrite to replace it, or choose another --output')
  assert output.read_bytes() == b'keep'
  run = export('--overwrite')
  assert run.returncode == 0, run.stderr[-3000:]
  assert output.read_bytes() != b'keep'
