"""The checkpoints of one workdir: save, resume, retention, corrupt steps.

Layout of `WORKDIR/checkpoints/` (one orbax `CheckpointManager`):

    1000/                  a finalized step (orbax writes `1000.orbax-checkpoint-tmp*`
      state/               and renames it atomically when the save is complete)
      record/metadata      JSON: step, epoch, metrics, device/process count, CRC-32s
      metrics/metrics      JSON: eval metrics of this step (for best-checkpoint retention)
    corrupt-1000/          a step that failed to restore, moved aside (never deleted)

What is saved is the train state as a plain nested dict
(`flax.serialization.to_state_dict`: step, params, batch_stats, opt_state, rng,
dynamic_scale) of host numpy arrays: a checkpoint restores on any number of
devices and does not depend on Python class names. The step is also the data
position (the input pipeline is a pure function of (seed, step)).

Retention: the last `keep_checkpoints` steps AND the one with the best eval
top-1 (`AnyPreservationPolicy([LatestN, BestN])`), so a long run never loses its
best model to recency-based deletion. A step only competes for "best" when it
was evaluated at that very step.

Multi-host: every process calls `save` (orbax synchronises them with barriers)
with the replicated state; host numpy arrays are written by process 0 only
(orbax's numpy handler), so the files are written once. Every process restores
the full state. Moving a corrupt step aside is done by process 0 between
barriers.

A save that fails in the background (a full disk, a directory made read-only)
is raised by `failure()`, `wait()` or `close()` as one ConfigError naming the
step, the checkpoint that is kept and what to do; the step's partial files are
removed, the older steps stay (orbax deletes old steps only after a save
succeeded).
"""

import glob
import json
import logging as std_logging
import math
import os
import re
import shutil
import sys
import time
from typing import Any, Mapping

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from resnet_jax import errors
from resnet_jax import parallel
from resnet_jax.checkpoint import integrity
from resnet_jax.errors import ConfigError

BEST_METRIC = 'eval_top1'
_STATE, _RECORD = 'state', 'record'


def _as_arrays(tree):
  """Python scalars (e.g. a fresh TrainState's step=0) as jnp arrays."""
  return jax.tree.map(
      lambda x: x if isinstance(x, (jax.Array, np.ndarray)) else jnp.asarray(x), tree)


def _abstract(tree):
  """Restore targets: the shape and dtype of each leaf (arrays or orbax metadata)."""
  def spec(x):
    if not (hasattr(x, 'shape') and hasattr(x, 'dtype')):
      x = jnp.asarray(x)
    return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
  return jax.tree.map(spec, tree)


def _best_metric(metrics: Mapping[str, Any] | None) -> float:
  """The retention score of a step: its eval top-1, -inf when it was not evaluated."""
  value = (metrics or {}).get(BEST_METRIC)
  return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def _preservation_policy(keep_last: int):
  """Keep the newest `keep_last` steps, plus the single best by eval top-1."""
  policies = ocp.checkpoint_managers
  return policies.AnyPreservationPolicy([
      policies.LatestN(n=keep_last),
      policies.BestN(get_metric_fn=_best_metric, n=1,
                     keep_checkpoints_without_metrics=False),
  ])


def _finite_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
          and math.isfinite(float(v))}


# A tensorstore error: an absl status code first ('OUT_OF_RANGE: Error reading ...').
_TENSORSTORE_ERROR = re.compile(r'^[A-Z][A-Z_]+: ')


class _UnretrievedReadErrors(std_logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" records of failed reads."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not ('exception was never retrieved' in record.getMessage()
                and isinstance(error, ValueError)
                and _TENSORSTORE_ERROR.match(str(error)))


def _quiet_abandoned_reads() -> None:
  """Drops the tracebacks that the other reads of an abandoned restore leave.

  When one array of a step cannot be read (a truncated file), orbax stops the
  restore at that error while tensorstore still completes the step's other
  reads: each completion that finds the event loop closed is reported by
  Python as an unraisable "Event loop is closed", and each other read that
  failed too as an asyncio "Task exception was never retrieved", a traceback
  each. The first failed read is raised to us (and the step skipped with one
  warning): these say nothing more. Every other report still goes where it
  went before.
  """
  asyncio_logger = std_logging.getLogger('asyncio')
  if not any(isinstance(f, _UnretrievedReadErrors) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_UnretrievedReadErrors())
  previous = sys.unraisablehook
  if getattr(previous, 'resnet_jax_quiet', False):
    return

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == 'Event loop is closed':
      return
    previous(unraisable)

  hook.resnet_jax_quiet = True
  sys.unraisablehook = hook


def _is_storage_error(error: BaseException) -> bool:
  """Whether a failed save was the file system's doing (not a bug of ours)."""
  return any(isinstance(e, OSError) or 'os_error_code' in str(e)
             for e in errors.chain(error))


def _size_text(num_bytes: int) -> str:
  for unit, size in (('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
    if num_bytes >= size:
      return f'{num_bytes / size:.1f} {unit}'
  return f'{num_bytes} bytes'


def _tree_bytes(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:
        pass
  return total


def is_step_name(name: str) -> bool:
  return name.isdigit() and (name == '0' or not name.startswith('0'))


def step_dirs(directory: str) -> list[int]:
  """The steps that have a directory in `directory` (finalized or not readable)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if is_step_name(n) and os.path.isdir(os.path.join(directory, n)))


class CheckpointManager:
  """Saves and restores the train state under `WORKDIR/checkpoints` (or any directory).

  Args:
    workdir: the run's workdir; checkpoints go to `workdir/checkpoints`.
    keep: how many of the newest steps to keep (besides the best).
    directory: use this checkpoints directory instead of `workdir/checkpoints`.
    read_only: never write, move or clean up anything (evaluation, warm starts,
      reading another run's checkpoints while it trains).
  """

  def __init__(self, workdir: str | None = None, *, keep: int = 3,
               directory: str | None = None, read_only: bool = False):
    self.directory = os.path.abspath(directory or os.path.join(workdir, 'checkpoints'))
    self.read_only = read_only
    # Steps found unusable by this manager: (step, where it was moved, why).
    self.moved_aside: list[tuple[int, str, str]] = []
    self._in_flight: int | None = None  # The step whose save runs in the background.
    self._closed = False
    _quiet_abandoned_reads()
    handlers = {_STATE: ocp.PyTreeCheckpointHandler(),
                _RECORD: ocp.JsonCheckpointHandler()}
    if read_only:
      # lightweight: no per-step metadata is read up front, so one unreadable
      # step cannot make every other step unreachable.
      options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                             save_interval_steps=0,
                                             lightweight_initialize=True)
    else:
      self._recover_directory()
      options = ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=True,
          # best_fn makes orbax write and re-read each step's metrics; the
          # preservation policy (which overrides best_fn for deletion) keeps the
          # last K plus the best.
          best_fn=_best_metric,
          preservation_policy=_preservation_policy(keep),
          cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, item_handlers=handlers,
                                          options=options)

  # -- start-up checks --

  def _recover_directory(self) -> None:
    """Deals with what a killed process can leave, before orbax reads the directory.

    - `STEP.orbax-checkpoint-tmp*`: a save that never completed. orbax deletes
      these (cleanup_tmp_directories); they are logged here so nothing
      disappears unannounced.
    - a finalized step whose metrics file is unreadable: orbax would fail to
      start on it, so it is moved aside like any corrupt step.
    """
    # Every process reaches the barrier below, whether or not the directory
    # exists yet when it looks (process 0 may be creating it meanwhile).
    if jax.process_index() == 0 and os.path.isdir(self.directory):
      for name in sorted(os.listdir(self.directory)):
        if ocp.path.step.TMP_DIR_SUFFIX in name:
          logging.warning('Removing incomplete checkpoint %s (a save that was '
                          'interrupted; never finalized).',
                          os.path.join(self.directory, name))
      for step in step_dirs(self.directory):
        metrics_file = os.path.join(self.directory, str(step), 'metrics', 'metrics')
        if not os.path.exists(metrics_file):
          continue
        try:
          with open(metrics_file, encoding='utf-8') as f:
            json.load(f)
        except (OSError, ValueError) as e:
          self.report_corrupt(step, f'unreadable metrics file ({e})')
    parallel.sync('resnet_jax:checkpoint_recover')

  def report_corrupt(self, step: int, reason: str) -> None:
    """Warns naming the step; in write mode moves it aside (process 0 only)."""
    path = self.step_path(step)
    if self.read_only:
      logging.warning('Skipping checkpoint %s: %s', path, reason)
      return
    moved = path
    if jax.process_index() == 0:
      moved = integrity.move_aside(self.directory, step)
      logging.warning('Skipping checkpoint %s: %s. Moved it to %s (delete it by '
                      'hand once inspected).', path, reason, moved)
    self.moved_aside.append((step, moved, reason))

  def _skip(self, step: int, error: Exception) -> None:
    self.report_corrupt(step, f'{type(error).__name__}: {integrity.first_line(error)}')
    parallel.sync('resnet_jax:checkpoint_skip')
    self._manager.reload()

  # -- queries --

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def corrupt_dirs(self) -> list[str]:
    """The steps moved aside as unusable, by this run or an earlier one (paths, newest first)."""
    if not os.path.isdir(self.directory):
      return []

    def newest_first(name):
      step, _, copy = name[len(integrity.CORRUPT_PREFIX):].partition('.')
      return (-int(step) if step.isdigit() else 0, name, copy)

    names = [n for n in os.listdir(self.directory) if n.startswith(integrity.CORRUPT_PREFIX)]
    return [os.path.join(self.directory, n) for n in sorted(names, key=newest_first)]

  def finalized_steps(self) -> list[int]:
    """The complete steps on disk now (a save in progress is not one yet)."""
    return step_dirs(self.directory)

  def kept(self) -> str:
    """What a rerun resumes from, as a sentence: 'The checkpoint of step N (PATH) is kept'."""
    steps = self.finalized_steps()
    if not steps:
      return f'No checkpoint is kept in {self.directory}'
    return f'The checkpoint of step {steps[-1]} ({self.step_path(steps[-1])}) is kept'

  def saved_shapes(self, step: int) -> dict[str, Any]:
    """{path: ArrayMetadata} of the saved state (reads metadata only)."""
    tree = self._manager.item_metadata(step)[_STATE]
    if tree is None:
      raise integrity.CorruptCheckpointError('no state item')
    return integrity.flatten(getattr(tree, 'tree', tree))

  def candidates(self, step: int | None) -> list[int]:
    """[step] when given (it must exist), else every step, newest first."""
    if step is not None:
      if step not in self.all_steps():
        raise ConfigError(f'no finalized checkpoint at {self.step_path(step)}; '
                          f'steps in {self.directory}: {self.all_steps() or "none"}')
      return [step]
    return sorted(self.all_steps(), reverse=True)

  # -- save --

  def save(self, step: int, state, *, epoch: float, metrics: Mapping[str, Any],
           best_metrics: Mapping[str, Any] | None = None) -> bool:
    """Starts an asynchronous save of `state` at `step`.

    Blocks only while the arrays are copied to the host (and for any previous
    save still in flight); files are written in the background.

    Args:
      step: the number of optimizer steps taken (also the data position).
      state: a TrainState (replicated over the mesh, or host arrays) or any
        flax-serializable pytree.
      epoch: step / steps_per_epoch.
      metrics: the latest train/eval metrics, recorded for people reading the record.
      best_metrics: eval metrics measured on this very state; makes the step a
        candidate for "best" retention. None when the step was not evaluated.

    Returns:
      Whether a save was started (False if `step` is not newer than the latest).
    """
    if self.read_only:
      raise RuntimeError(f'{self.directory} was opened read-only')
    start = time.perf_counter()
    # Host copies: orbax writes numpy arrays from process 0 only, and the
    # background writer never sees buffers that the next (donating) step reuses.
    host = parallel.to_host(_as_arrays(flax.serialization.to_state_dict(state)))
    record = {
        'step': int(step),
        'epoch': float(epoch),
        'metrics': _finite_floats(metrics),
        'device_count': jax.device_count(),
        'process_count': jax.process_count(),
        'time': time.time(),
        'crc32': integrity.checksums(host),
    }
    # The previous save first: orbax would wait for it inside save() and
    # raise its failure from there, on the failing process only.
    failure = None
    try:
      self.wait()
    except ConfigError as e:
      failure = e
    failure = self.agree(failure)
    if failure is not None:
      raise failure
    try:
      saved = self._manager.save(
          int(step), args=ocp.args.Composite(**{
              _STATE: ocp.args.PyTreeSave(host), _RECORD: ocp.args.JsonSave(record)}),
          metrics=_finite_floats(best_metrics or {}))
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._save_failed(int(step), e) from None
    if not saved:
      logging.warning('Checkpoint for step %d not written: the newest is step %s.',
                      step, self.latest_step())
      return False
    self._in_flight = int(step)
    logging.info('Checkpoint for step %d started (%.2fs blocking): %s', step,
                 time.perf_counter() - start, self.step_path(step))
    return True

  def failure(self) -> ConfigError | None:
    """The failure of the save in flight if it has ended so; never blocks.

    Cheap enough for every step: the loop calls it so that a failed save stops
    the run at once, not at the next save. Returns None while the save runs
    and once it has succeeded (then there is none in flight any more).
    """
    if self._in_flight is None or self._manager.is_saving_in_progress():
      return None
    try:
      self.wait()
    except ConfigError as e:
      return e
    return None

  def agree(self, failure: Exception | None) -> Exception | None:
    """A save failure known to one process, made known to all (a collective).

    Across hosts every process must call this at the same point (the loop:
    at logging steps; `save`; `close`), so that none goes on to a barrier
    that a failed process never reaches.
    """
    if jax.process_count() > 1 and parallel.any_process(failure is not None):
      return failure or ConfigError(
          'a checkpoint save failed on another process, so the run stopped: see the '
          f'log of process 0. {self.kept()}: rerun the same command to resume from it')
    return failure

  def wait(self) -> None:
    """Blocks until the save in flight (if any) is finalized.

    Raises:
      OutOfSpaceError: the disk or quota was full (the message names the step,
        what is kept and how much room a checkpoint takes).
      ConfigError: the file system refused the save otherwise (permissions).
    """
    if self._in_flight is None:
      return
    step, self._in_flight = self._in_flight, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._save_failed(step, e) from None

  def _save_failed(self, step: int, error: Exception) -> Exception:
    """The one-line error of a failed save; its partial files are removed."""
    if not _is_storage_error(error):
      return error  # A bug, not the disk: keep its traceback.
    if jax.process_index() == 0:
      # Nothing in them can be used, and on a full disk they hold the room a
      # rerun needs first (lock, config and metrics files).
      for partial in glob.glob(os.path.join(
          glob.escape(self.directory), f'{step}{ocp.path.step.TMP_DIR_SUFFIX}*')):
        shutil.rmtree(partial, ignore_errors=True)
    kept = self.kept()
    newest = self.finalized_steps()
    resume = f'resume from step {newest[-1]}' if newest else 'start again'
    reason = integrity.first_line(errors.chain(error)[-1])
    if errors.is_out_of_space(error):
      room = ''
      if newest:
        room = f' (a checkpoint takes about {_size_text(_tree_bytes(self.step_path(newest[-1])))})'
      return errors.OutOfSpaceError(
          f'no space left on device: the checkpoint of step {step} could not be written '
          f'to {self.directory}, so the run stopped. {kept}. Free space there{room}, '
          f'then rerun the same command to {resume}')
    return ConfigError(
        f'the checkpoint of step {step} could not be written to {self.directory} '
        f'({reason}), so the run stopped. {kept}. Fix the cause, then rerun the same '
        f'command to {resume}')

  def close(self, *, check: bool = True) -> None:
    """Waits for the save in flight (if any) to be finalized, then releases orbax.

    Args:
      check: raise the save's failure (see `wait`); False only logs it (when
        another error is already on its way out).
    """
    if self._closed:
      return
    self._closed = True
    failure = None
    try:
      self.wait()
    except Exception as e:  # pylint: disable=broad-exception-caught
      failure = e
    if check:
      failure = self.agree(failure)
    self._manager.close()
    if failure is not None:
      if check:
        raise failure
      logging.warning('%s', failure)

  # -- restore --

  def read_record(self, step: int) -> dict[str, Any]:
    """The JSON record of a step (step, epoch, metrics, CRC-32s, ...)."""
    return self._manager.restore(step, args=ocp.args.Composite(
        **{_RECORD: ocp.args.JsonRestore()}))[_RECORD]

  def restore_host(self, step: int, target: Any | None = None, *,
                   partial: bool = False) -> tuple[Any, dict]:
    """Reads `step` as host numpy arrays and verifies their checksums.

    Args:
      step: the step to read.
      target: nested dict of array-likes giving the arrays to read (shapes and
        dtypes); None = everything saved, as saved.
      partial: `target` names a subset of the saved arrays.

    Returns:
      (tree of numpy arrays, record).

    Raises:
      CorruptCheckpointError: the bytes differ from those saved.
      Exception: whatever orbax/tensorstore raise on unreadable files.
    """
    record = self.read_record(step)
    if target is None:
      metadata = self._manager.item_metadata(step)[_STATE]
      target = getattr(metadata, 'tree', metadata)
    target = _abstract(target)
    # To host numpy first: the checksums are of host bytes, as at save time.
    restore_args = jax.tree.map(
        lambda x: ocp.RestoreArgs(restore_type=np.ndarray, dtype=x.dtype), target)
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        _STATE: ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                       partial_restore=partial)}))[_STATE]
    integrity.verify(restored, record.get('crc32'))
    return restored, record

  def restore_latest(self, template) -> tuple[Any, dict[str, Any]] | None:
    """Restores the newest usable checkpoint into the structure of `template`.

    Newest first: a step that cannot be read or fails verification is skipped
    with a warning naming it (and, unless read-only, moved to `corrupt-STEP`), and
    the next older one is tried.

    Args:
      template: a TrainState with the model's shapes (its values are not used).

    Returns:
      (state with host numpy leaves, record), or None when there is no usable
      checkpoint. `parallel.replicate` puts the state on a mesh: any number of
      devices, whatever the run that saved it had.

    Raises:
      ConfigError: the checkpoint was written for a different model or optimizer
        (names the mismatched arrays and their shapes).
    """
    target_tree = _abstract(_as_arrays(flax.serialization.to_state_dict(template)))
    for step in self.candidates(None):
      try:
        saved = self.saved_shapes(step)
      except Exception as e:  # pylint: disable=broad-exception-caught
        self._skip(step, e)
        continue
      lines = integrity.describe_mismatch(saved, integrity.flatten(target_tree))
      if lines:
        raise integrity.mismatch_error(
            self.step_path(step), lines,
            'Resuming needs the same model and optimizer: use a new --workdir (with '
            '--config.init_from=<this checkpoint> to fine-tune from it)')
      try:
        restored, record = self.restore_host(step, target_tree)
      except Exception as e:  # pylint: disable=broad-exception-caught
        self._skip(step, e)
        continue
      return flax.serialization.from_state_dict(template, restored), record
    return None
