"""One process per workdir: an exclusive lock on `WORKDIR/.lock`.

Two runs writing the same `checkpoints/` and `metrics.jsonl` (a job submitted
twice, two sweep runners on one grid) corrupt each other's results silently;
the second one must refuse at once and say who holds the directory.

    with workdir_lock.acquire(workdir):
      train(...)

- The lock is `fcntl.flock` (exclusive, non-blocking), so it dies with its
  process: after a `kill -9` or a crashed node (on NFS, once the server lets
  the dead client's lease expire) it is free again, and resuming needs no
  manual step.
- The file records the holder as JSON (host, pid, start time, command line).
  A clean release empties it; a record found in a lock nobody holds is that
  of a holder that died, and the takeover is logged with its name.
- A holder can hand its lock to a child process (the sweep runner to the
  `resnet_jax.main` of a point): pass `lock.fd` in `pass_fds` and
  `lock.child_env()` in its environment; the child's `acquire` of the same
  directory then adopts the inherited lock instead of waiting on it.
"""

import atexit
import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from typing import Any, Mapping

from absl import logging

from resnet_jax import errors
from resnet_jax.errors import ConfigError

LOCK_FILE = '.lock'
# 'FD:PATH' of a lock inherited from the parent process (see WorkdirLock.child_env).
ENV_VAR = 'RESNET_JAX_WORKDIR_LOCK'
_MAX_COMMAND = 200


class WorkdirBusyError(ConfigError):
  """Another live process holds the workdir.

  Attributes:
    directory: the workdir.
    holder: the holder's record (host, pid, started, command), or None when it
      has not written one yet.
  """

  def __init__(self, directory: str, holder: Mapping[str, Any] | None):
    self.directory = directory
    self.holder = dict(holder) if holder else None
    who = (describe(holder) if holder
           else 'another process (which has not written its name yet)')
    super().__init__(f'workdir {directory} is in use by {who}: a job submitted twice? '
                     'Wait for it to finish, or use another --workdir')


def describe(record: Mapping[str, Any]) -> str:
  """'pid 123 on host since 2026-12-02T10:00:00+00:00 (`python -m ...`)'."""
  command = ' '.join(str(record.get('command', '')).split())  # One line, always.
  if len(command) > _MAX_COMMAND:
    command = command[:_MAX_COMMAND - 1] + '…'
  text = f'pid {record.get("pid", "?")} on {record.get("host", "?")}'
  if record.get('started'):
    text += f' since {record["started"]}'
  if record.get('slurm_job'):
    text += f' (SLURM job {record["slurm_job"]})'
  return text + (f' (`{command}`)' if command else '')


def _this_process() -> dict[str, Any]:
  record = {
      'host': socket.gethostname(), 'pid': os.getpid(),
      'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
      'command': shlex.join(getattr(sys, 'orig_argv', sys.argv)),
  }
  if os.environ.get('SLURM_JOB_ID'):
    record['slurm_job'] = os.environ['SLURM_JOB_ID']
  return record


def _read(fd: int) -> dict[str, Any] | None:
  """The record in the lock file, or None when it is empty or unreadable."""
  data = b''
  while chunk := os.pread(fd, 65536, len(data)):
    data += chunk
  text = data.decode('utf-8', errors='replace').strip()
  if not text:
    return None
  try:
    # raw_decode: a rewrite in progress may leave the old record's tail behind.
    record, _ = json.JSONDecoder().raw_decode(text)
  except json.JSONDecodeError:
    return None
  return record if isinstance(record, dict) else None


def _write(fd: int, record: Mapping[str, Any] | None) -> None:
  # Write, then cut: a reader never sees the file empty while it is held.
  data = (json.dumps(record, sort_keys=True) + '\n').encode() if record else b''
  os.pwrite(fd, data, 0)
  os.ftruncate(fd, len(data))
  os.fsync(fd)  # The record must survive the crash it is there to explain.


def _record(fd: int, record: Mapping[str, Any], directory: str, path: str) -> None:
  """Writes this holder's record into the lock file just taken; closes it on failure.

  Raises:
    OutOfSpaceError: the disk or quota is full.
    ConfigError: the file cannot be written otherwise.
  """
  try:
    _write(fd, record)
  except OSError as e:
    os.close(fd)  # Frees the lock too: this process will not run.
    if errors.is_out_of_space(e):
      raise errors.OutOfSpaceError(
          f'no space left on device: cannot write the lock file {path}, so nothing '
          f'was started or changed in {directory}. Free space there (or use another '
          '--workdir), then rerun the same command') from None
    raise ConfigError(f'cannot write the lock file {path}: {e.strerror or e}; choose '
                      'a --workdir in a writable location') from None


class WorkdirLock:
  """A held lock on a workdir; `release()` (or leaving `with`) frees it.

  Attributes:
    directory: the workdir (absolute).
    path: its lock file.
    fd: the open lock file; hand it to a child with `pass_fds=(lock.fd,)`.
    record: what the file says about this holder.
    adopted: True when the lock was inherited from the parent process.
    previous: the record of a dead holder whose lock this one took over, or None.
  """

  def __init__(self, directory: str, fd: int, record: Mapping[str, Any], *,
               adopted: bool = False, previous: Mapping[str, Any] | None = None,
               restore: Mapping[str, Any] | None = None):
    self.directory = directory
    self.path = os.path.join(directory, LOCK_FILE)
    self.fd: int | None = fd
    self.record = dict(record)
    self.adopted = adopted
    self.previous = dict(previous) if previous else None
    self._restore = restore  # An adopted lock gives the record back to the parent.
    # A normal exit that skips release() still leaves a clean lock file.
    atexit.register(self.release)

  @property
  def held(self) -> bool:
    return self.fd is not None

  def child_env(self) -> dict[str, str]:
    """The environment variable that lets a child adopt this lock (with pass_fds)."""
    if self.fd is None:
      raise RuntimeError(f'the lock on {self.directory} is released')
    return {ENV_VAR: f'{self.fd}:{self.path}'}

  def release(self) -> None:
    """Frees the lock (idempotent). An adopted lock stays with the parent."""
    if self.fd is None:
      return
    fd, self.fd = self.fd, None
    atexit.unregister(self.release)
    try:
      _write(fd, self._restore)
      if not self.adopted:
        # Not for an adopted lock: the flock belongs to the open file shared
        # with the parent, and unlocking it would free the parent's lock too.
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as e:  # A vanished workdir: the lock goes with the process anyway.
      logging.warning('Releasing the lock %s: %s', self.path, e)
    finally:
      os.close(fd)

  def __enter__(self) -> 'WorkdirLock':
    return self

  def __exit__(self, *exc) -> bool:
    self.release()
    return False

  def __repr__(self) -> str:
    state = 'adopted' if self.adopted else ('held' if self.held else 'released')
    return f'WorkdirLock({self.directory!r}, {state})'


def _inherited(directory: str, path: str) -> WorkdirLock | None:
  """The lock on `path` passed down by the parent process, if there is one."""
  value = os.environ.get(ENV_VAR, '')
  fd_text, _, inherited_path = value.partition(':')
  if not fd_text.isdigit() or os.path.realpath(inherited_path) != os.path.realpath(path):
    return None  # None, or a lock on another directory: not ours to adopt.
  fd = int(fd_text)
  try:
    same_file = os.path.samestat(os.fstat(fd), os.stat(path))
  except OSError:
    same_file = False
  if not same_file:
    # The variable without the descriptor (not in pass_fds): acquire normally.
    return None
  del os.environ[ENV_VAR]  # Adopted once; the fd number may be reused later.
  parent = _read(fd)
  record = _this_process()
  if parent:
    record['parent'] = parent
  # No flock call: the parent's lock is on this very open file, already held.
  _record(fd, record, directory, path)
  return WorkdirLock(directory, fd, record, adopted=True, restore=parent)


def acquire(directory: str) -> WorkdirLock:
  """Takes the workdir's lock, creating the directory if needed.

  Args:
    directory: the workdir.

  Returns:
    The held lock: use it as a context manager or call `release()`.

  Raises:
    WorkdirBusyError: another live process holds it; the message names that
      process, its host and since when.
    OutOfSpaceError: the lock file cannot be written for a full disk or quota.
    ConfigError: the directory cannot be created or written.
  """
  directory = os.path.abspath(directory)
  path = os.path.join(directory, LOCK_FILE)
  try:
    os.makedirs(directory, exist_ok=True)
    inherited = _inherited(directory, path)
    if inherited is not None:
      return inherited
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise ConfigError(f'workdir {directory} cannot be created or written: '
                      f'{e.strerror or e}') from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      os.close(fd)
      raise ConfigError(f'cannot lock workdir {directory}: {e.strerror or e}') from None
    holder = _read(fd)
    for _ in range(10):  # A holder between its flock and its first write.
      if holder:
        break
      time.sleep(0.02)
      holder = _read(fd)
    os.close(fd)
    raise WorkdirBusyError(directory, holder) from None
  previous = _read(fd)
  record = _this_process()
  _record(fd, record, directory, path)
  if previous:
    logging.warning('Workdir %s: taking over the lock left by %s, which is no longer '
                    'running.', directory, describe(previous))
  return WorkdirLock(directory, fd, record, previous=previous)

