"""Tests for resnet_jax.workdir_lock: one process per workdir, across real processes."""

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from resnet_jax import errors
from resnet_jax import workdir_lock
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Takes the lock on argv[1], says so, and holds it until killed.
HOLDER = textwrap.dedent("""\
    import sys, time
    from resnet_jax import workdir_lock
    lock = workdir_lock.acquire(sys.argv[1])
    print('locked', flush=True)
    time.sleep(120)
    """)
# What a command does: acquire under cli.user_errors (ConfigError -> one line, exit 2).
COMMAND = textwrap.dedent("""\
    import sys
    from resnet_jax import cli, workdir_lock
    def main(argv):
      with workdir_lock.acquire(argv[1]) as lock:
        print('adopted' if lock.adopted else 'acquired', flush=True)
      return 0
    sys.exit(cli.user_errors(main)(sys.argv))
    """)


def _python(code, *args, **kwargs):
  env = dict(os.environ, PYTHONPATH=REPO)
  env.update(kwargs.pop('env', {}))
  return subprocess.Popen([sys.executable, '-c', code, *args], cwd=REPO, env=env,
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          **kwargs)


@pytest.fixture
def holder(tmp_path):
  """A live process holding tmp_path/'w'; killed with SIGKILL at the end."""
  proc = _python(HOLDER, str(tmp_path / 'w'))
  assert proc.stdout.readline() == 'locked\n', proc.stderr.read()
  yield proc
  proc.kill()
  proc.communicate()


def test_a_second_process_refuses_at_once_naming_the_holder(tmp_path, holder):
  start = time.monotonic()
  second = _python(COMMAND, str(tmp_path / 'w'))
  out, err = second.communicate(timeout=60)
  assert second.returncode == 2 and out == ''
  assert time.monotonic() - start < 10  # Refused, not waiting.
  assert err.startswith(f'error: workdir {tmp_path / "w"} is in use by pid {holder.pid} '
                        f'on {socket.gethostname()} since 20')
  assert '(`' in err and "import sys, time from resnet_jax import workdir_lock" in err
  assert err.rstrip().endswith('a job submitted twice? Wait for it to finish, or use '
                               'another --workdir')
  assert len(err.strip().splitlines()) == 1
  # In-process: a ConfigError (exit 2 through every CLI) with the holder's record.
  with pytest.raises(workdir_lock.WorkdirBusyError) as info:
    workdir_lock.acquire(str(tmp_path / 'w'))
  assert isinstance(info.value, ConfigError)
  assert info.value.holder['pid'] == holder.pid
  assert info.value.holder['host'] == socket.gethostname()


def test_a_lock_left_by_kill_9_is_taken_over_with_a_warning(tmp_path, holder, caplog):
  holder.kill()
  holder.wait()
  with caplog.at_level(logging.WARNING):
    lock = workdir_lock.acquire(str(tmp_path / 'w'))
  with lock:
    assert lock.previous['pid'] == holder.pid
    record = json.loads((tmp_path / 'w' / '.lock').read_text())
    assert record['pid'] == os.getpid() and record['command']
    assert record == lock.record
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(f'taking over the lock left by pid {holder.pid} on ' in w
             and 'no longer running' in w for w in warnings), warnings
  # Released: the file is empty, and the next taker has nothing to warn about.
  assert (tmp_path / 'w' / '.lock').read_text() == ''
  with workdir_lock.acquire(str(tmp_path / 'w')) as again:
    assert again.previous is None


def test_the_lock_is_released_when_its_process_exits(tmp_path):
  # Exits without calling release(): the lock goes with the process, cleanly.
  proc = _python('import sys; from resnet_jax import workdir_lock; '
                 'workdir_lock.acquire(sys.argv[1])', str(tmp_path / 'w'))
  assert proc.communicate(timeout=60)[1] == '' and proc.returncode == 0
  assert (tmp_path / 'w' / '.lock').read_text() == ''
  with workdir_lock.acquire(str(tmp_path / 'w')) as lock:
    assert lock.previous is None and not lock.adopted


def test_a_child_adopts_the_lock_handed_to_it(tmp_path):
  with workdir_lock.acquire(str(tmp_path / 'w')) as lock:
    child = _python(COMMAND, str(tmp_path / 'w'), env=lock.child_env(),
                    pass_fds=(lock.fd,))
    out, err = child.communicate(timeout=60)
    assert (child.returncode, out) == (0, 'adopted\n'), err
    # The child gave the record back and left the lock held by this process.
    assert json.loads((tmp_path / 'w' / '.lock').read_text()) == lock.record
    third = _python(COMMAND, str(tmp_path / 'w'))
    out, err = third.communicate(timeout=60)
    assert third.returncode == 2 and f'in use by pid {os.getpid()} ' in err
  assert (tmp_path / 'w' / '.lock').read_text() == ''


def test_an_adopted_lock_names_the_child_while_it_runs(tmp_path):
  code = textwrap.dedent("""\
      import json, sys
      from resnet_jax import workdir_lock
      lock = workdir_lock.acquire(sys.argv[1])
      print(json.dumps(lock.record), flush=True)
      sys.stdin.readline()
      """)
  with workdir_lock.acquire(str(tmp_path / 'w')) as lock:
    child = _python(code, str(tmp_path / 'w'), env=lock.child_env(),
                    pass_fds=(lock.fd,), stdin=subprocess.PIPE)
    record = json.loads(child.stdout.readline())
    assert record['pid'] == child.pid and record['parent'] == lock.record
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f'in use by pid {child.pid} '):
      workdir_lock.acquire(str(tmp_path / 'w'))
    child.communicate('\n', timeout=60)
    assert child.returncode == 0


def test_an_inherited_lock_of_another_directory_is_ignored(tmp_path):
  with workdir_lock.acquire(str(tmp_path / 'a')) as lock:
    child = _python(COMMAND, str(tmp_path / 'b'), env=lock.child_env(),
                    pass_fds=(lock.fd,))
    out, err = child.communicate(timeout=60)
    assert (child.returncode, out) == (0, 'acquired\n'), err
    # The variable without the descriptor: a normal acquire, which waits for nobody.
    child = _python(COMMAND, str(tmp_path / 'a'), env=lock.child_env())
    out, err = child.communicate(timeout=60)
    assert child.returncode == 2 and f'in use by pid {os.getpid()} ' in err
    assert json.loads((tmp_path / 'a' / '.lock').read_text()) == lock.record


def test_one_process_cannot_take_its_own_workdir_twice(tmp_path):
  with workdir_lock.acquire(str(tmp_path)) as lock:
    assert lock.held and repr(lock) == f'WorkdirLock({str(tmp_path)!r}, held)'
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f'pid {os.getpid()} '):
      workdir_lock.acquire(str(tmp_path))
  assert not lock.held
  lock.release()  # Idempotent.


def test_a_workdir_that_cannot_be_created_is_a_config_error(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(ConfigError, match=f'^workdir {tmp_path}/file/run cannot be created '
                     'or written: Not a directory$'):
    workdir_lock.acquire(str(tmp_path / 'file' / 'run'))


def test_describe_keeps_the_holder_on_one_line():
  record = {'pid': 7, 'host': 'node3', 'started': '2026-12-02T10:00:00+00:00',
            'command': 'python -c "a\n  b"' + ' x' * 200, 'slurm_job': '123'}
  text = workdir_lock.describe(record)
  assert text.startswith('pid 7 on node3 since 2026-12-02T10:00:00+00:00 (SLURM job 123) '
                         '(`python -c "a b" x x')
  assert '\n' not in text and text.endswith('…`)') and len(text) < 300


def test_a_full_disk_is_one_line_and_leaves_the_lock_free(tmp_path, monkeypatch):
  def full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  with monkeypatch.context() as m:
    m.setattr(workdir_lock.os, 'pwrite', full)
    with pytest.raises(errors.OutOfSpaceError) as e:
      workdir_lock.acquire(str(tmp_path / 'w'))
  assert str(e.value).startswith(f'no space left on device: cannot write the lock file '
                                 f'{tmp_path / "w" / ".lock"}, so nothing was started')
  with workdir_lock.acquire(str(tmp_path / 'w')) as lock:  # Not left held.
    assert lock.held and lock.previous is None
