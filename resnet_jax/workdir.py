"""The run's directory: created and checked, held by one run, and its config record.

`open_run(workdir, config)` is what `train_and_evaluate` does before anything
else touches the workdir:

1. Creates it, or says in one line why it cannot (a path under /proc, no
   permission, a file in the way).
2. Takes its lock (`workdir_lock`): a second run on the same workdir (a job
   submitted twice) refuses at once, naming the process and host that hold it;
   the lock of a killed run is taken over.
3. When the workdir already holds checkpoints, compares the config with the
   one they were written under (`config.json`): a difference is an error that
   lists the fields (old -> new), unless it only lengthens training or changes
   how often the run logs, evaluates or checkpoints (`RESUMABLE_CHANGES`), or
   the user allows it (`allow_config_change`, the `--allow_config_change` flag).

`RunDir.record_config` then writes the resolved config to `config.json` and
appends it to `config_history.jsonl`: every config the workdir ran under,
with the step it started from.
"""

import dataclasses
import datetime
import json
import os
import socket
from typing import Any, Mapping

from absl import logging
import jax
import ml_collections

from resnet_jax import parallel
from resnet_jax import workdir_lock
from resnet_jax.errors import ConfigError

CONFIG_FILE = 'config.json'
HISTORY_FILE = 'config_history.jsonl'
# What the run's data were: classes and their names, image shape, splits,
# normalisation (`data.DatasetMeta`); prediction and export read it.
DATASET_FILE = 'dataset.json'
CHECKPOINTS = 'checkpoints'
# Fields a resumed run may change without --allow_config_change: how often it
# logs, evaluates and checkpoints, how much it keeps, where it reads data from,
# how it is launched, how it evaluates. None of them changes what is trained.
RESUMABLE_CHANGES = frozenset({
    'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
    'keep_checkpoints', 'num_eval_batches', 'prefetch_batches', 'num_workers', 'data_dir',
    'manual_dir', 'download', 'distributed', 'coordinator_address', 'num_processes',
    'process_id', 'init_from', 'init_from_skip_head', 'init_from_ema', 'eval_resize',
})
# May grow, not shrink: training for longer continues the same run.
LENGTHS = ('num_train_steps', 'num_epochs')
_MAX_LISTED = 8


def ensure_writable(path: str, what: str = 'workdir') -> str:
  """Creates directory `path` if needed and checks it is writable; returns it absolute.

  Raises:
    ConfigError: it cannot be created or written (one line naming the path).
  """
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f'cannot create the {what} {path}: {e.strerror or e}; '
                      'choose a --workdir in a writable location') from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise ConfigError(f'the {what} {path} is not writable; choose another --workdir')
  return path


def has_checkpoints(workdir: str) -> bool:
  """Whether `workdir/checkpoints` holds any finalized step."""
  directory = os.path.join(workdir, CHECKPOINTS)
  return os.path.isdir(directory) and any(
      n.isdigit() for n in os.listdir(directory))


def _flat(config: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
  """{'model.depth': 20, ...} of a config, as JSON values (tuples as lists)."""
  if hasattr(config, 'to_json_best_effort'):
    config = json.loads(config.to_json_best_effort())
  out = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      out.update({f'{key}.{k}': v for k, v in _flat(value).items()})
    else:
      out[key] = value
  return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple]:
  """{field: (old, new)} for every field both configs have and that differs.

  A field only one of them has was added to (or removed from) the code between
  the runs, not changed by the user: it is not a difference of the run.
  """
  a, b = _flat(old), _flat(new)
  return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}


def blocking_changes(changes: Mapping[str, tuple]) -> dict[str, tuple]:
  """The changes that make a resumed run a different run."""
  out = {}
  for key, (old, new) in changes.items():
    if key in RESUMABLE_CHANGES:
      continue
    if key in LENGTHS and isinstance(old, (int, float)) and isinstance(new, (int, float)):
      # -1 (num_train_steps) means "use num_epochs": a change to or from it is real.
      if old > 0 and new >= old:
        continue
    out[key] = (old, new)
  return out


def _describe(changes: Mapping[str, tuple]) -> str:
  items = [f'{k}: {old!r} -> {new!r}' for k, (old, new) in changes.items()]
  more = f' ... ({len(items)} in all)' if len(items) > _MAX_LISTED else ''
  return '; '.join(items[:_MAX_LISTED]) + more


def write_dataset(meta: Any, workdir: str) -> str:
  """Writes a `data.DatasetMeta` as WORKDIR/dataset.json (atomically); returns its path."""
  path = os.path.join(workdir, DATASET_FILE)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(dataclasses.asdict(meta), f, indent=1)
    f.write('\n')
  os.replace(path + '.tmp', path)
  return path


def read_dataset(workdir: str) -> dict[str, Any] | None:
  """The dataset.json of a workdir as a dict, or None where there is none."""
  path = os.path.join(workdir, DATASET_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes `config` as WORKDIR/config.json (atomically); returns its path."""
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')
  os.replace(tmp, path)
  return path


class RunDir:
  """An opened workdir, held by this run (process 0 holds the lock)."""

  def __init__(self, path: str, lock: workdir_lock.WorkdirLock | None,
               changes: Mapping[str, tuple]):
    self.path = path
    self._lock = lock
    self._changes = dict(changes)

  def record_config(self, resolved: ml_collections.ConfigDict, meta: Any,
                    start_step: int) -> None:
    """Writes config.json and dataset.json, appends to the history (process 0 only)."""
    if jax.process_index() != 0:
      return
    write_dataset(meta, self.path)
    with open(write_config(resolved, self.path), encoding='utf-8') as f:
      recorded = json.load(f)
    entry = {
        'time': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        'host': socket.gethostname(), 'pid': os.getpid(), 'start_step': int(start_step),
        'changed': {k: list(v) for k, v in self._changes.items()},
        'config': recorded,
    }
    with open(os.path.join(self.path, HISTORY_FILE), 'a', encoding='utf-8') as f:
      f.write(json.dumps(entry, sort_keys=True) + '\n')

  def close(self) -> None:
    if self._lock is not None:
      self._lock.release()
      self._lock = None

  def __enter__(self) -> 'RunDir':
    return self

  def __exit__(self, *exc) -> bool:
    self.close()
    return False


def read_config(workdir: str) -> dict[str, Any] | None:
  """The config.json of a workdir as a dict, or None where there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f'{path} is unreadable ({e}); move it aside to start over') from None


def open_run(workdir: str, config: ml_collections.ConfigDict, *,
             allow_config_change: bool = False) -> RunDir:
  """Creates, locks and checks the workdir of a training run (see the module docstring).

  Raises:
    ConfigError: not writable, in use by another run, or its checkpoints were
      written under a config that differs in a field that changes the run.
  """
  path = ensure_writable(workdir)
  lock = None
  busy = None
  if jax.process_index() == 0:
    try:
      lock = workdir_lock.acquire(path)
    except workdir_lock.WorkdirBusyError as e:
      busy = e
  # Every process learns whether process 0 got the lock: none starts alone.
  if parallel.any_process(busy is not None):
    raise busy or ConfigError(f'workdir {path} is in use by another run (see process 0)')
  try:
    changes = {}
    previous = read_config(path)
    if previous is not None and has_checkpoints(path):
      changes = config_changes(previous, _comparable(config, previous))
      blocking = blocking_changes(changes)
      if blocking and not allow_config_change:
        raise ConfigError(
            f'workdir {path} holds checkpoints of a run with another config: '
            f'{_describe(blocking)}. Resuming would continue that run with these '
            'changes: use a new --workdir, rerun with the same config, or pass '
            '--allow_config_change to resume with them anyway')
      if changes:
        logging.warning('Resuming %s with config changes: %s', path, _describe(changes))
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  return RunDir(path, lock, changes)


def _comparable(config: ml_collections.ConfigDict,
                previous: Mapping[str, Any]) -> dict[str, Any]:
  """The config as config.json would record it, for comparison with `previous`.

  config.json holds the resolved num_classes, image_size, mean and std (from
  the data); a config that leaves them unset (0 or (): from the data)
  compares as the recorded value.
  """
  current = json.loads(config.to_json_best_effort())
  for key in ('num_classes', 'image_size', 'mean', 'std'):
    if not current.get(key) and key in previous:
      current[key] = previous[key]
  return current
