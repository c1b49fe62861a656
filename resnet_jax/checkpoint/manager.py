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
"""

import json
import math
import os
import time
from typing import Any, Mapping

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

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
    if jax.process_index() == 0:
      moved = integrity.move_aside(self.directory, step)
      logging.warning('Skipping checkpoint %s: %s. Moved it to %s (delete it by '
                      'hand once inspected).', path, reason, moved)

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
    saved = self._manager.save(
        int(step), args=ocp.args.Composite(**{
            _STATE: ocp.args.PyTreeSave(host), _RECORD: ocp.args.JsonSave(record)}),
        metrics=_finite_floats(best_metrics or {}))
    if not saved:
      logging.warning('Checkpoint for step %d not written: the newest is step %s.',
                      step, self.latest_step())
      return False
    logging.info('Checkpoint for step %d started (%.2fs blocking): %s', step,
                 time.perf_counter() - start, self.step_path(step))
    return True

  def close(self) -> None:
    """Waits for the save in flight (if any) to be finalized, then releases orbax."""
    self._manager.wait_until_finished()
    self._manager.close()

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
