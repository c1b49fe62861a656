"""Orbax checkpoints in the workdir: save, resume, evaluate, warm-start.

Layout of `WORKDIR/checkpoints/` (one orbax `CheckpointManager`):

    1000/                  a finalized step (orbax writes `1000.orbax-checkpoint-tmp*`
      state/               and renames it atomically when the save is complete)
      record/metadata      JSON: step, epoch, data position, metrics, CRC-32s
      metrics/metrics      JSON: eval metrics of this step (for best-checkpoint retention)
    corrupt-1000/          a step that failed to restore, moved aside (never deleted)

What is saved is the *unreplicated* train state as a plain nested dict
(`flax.serialization.to_state_dict`: step, params, batch_stats, opt_state, rng,
dynamic_scale) of host numpy arrays, so a checkpoint restores on any number of
devices and does not depend on Python class names.

Retention: the last `keep_checkpoints` steps AND the one with the best eval
top-1 (`AnyPreservationPolicy([LatestN, BestN])`), so a long run never loses its
best model to recency-based deletion. A step only competes for "best" when it
was evaluated at that very step.

Integrity: orbax's atomic rename protects against a crash during a save, but
nothing in its default format detects bytes changed after the fact (zarr chunks
carry no checksum: a garbled chunk restores silently wrong values). Each record
therefore carries a CRC-32 per array, of the host bytes handed to orbax, and
every restore checks them. A step that fails to restore or to verify
is skipped with a warning naming it, and the next older one is tried.

Multi-host: every process calls `save` (orbax synchronises them with barriers)
with its own copy of the unreplicated state; the state is replicated, so the
copies are equal. Host numpy arrays are written by process 0 only (orbax's numpy
handler), so the files are written once. Every process restores the full state.
Moving a corrupt step aside is done by process 0 between barriers.
"""

import json
import math
import os
import time
import zlib
from typing import Any, Iterable, Mapping

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as preservation_lib

from resnet_jax.configlib import ConfigError

FORMAT_VERSION = 1
# The classifier: `Head` module, Dense named 'fc' (resnet_jax/models/resnet.py).
HEAD_PREFIX = 'params/head/fc/'
BEST_METRIC = 'eval_top1'
CORRUPT_PREFIX = 'corrupt-'
_STATE, _RECORD = 'state', 'record'
# At most this many mismatched parameters are named in an error message.
_MAX_LISTED = 12
_EVAL_HINT = ('Pass the --config (model, num_classes) the checkpoint was trained with')


class CorruptCheckpointError(RuntimeError):
  """A checkpoint step could not be read back or failed verification."""


# --- Trees ------------------------------------------------------------------


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'a/b/c': leaf} for a nested dict; None leaves and empty dicts vanish."""
  if isinstance(tree, Mapping):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, f'{prefix}{key}/'))
    return out
  if tree is None:
    return {}
  return {prefix[:-1]: tree}


def _select(tree: Any, keep: Iterable[str], prefix: str = '') -> Any:
  """The sub-tree of a nested dict whose leaf paths are in `keep`."""
  keep = keep if isinstance(keep, (set, frozenset)) else set(keep)
  if isinstance(tree, Mapping):
    out = {}
    for key, value in tree.items():
      sub = _select(value, keep, f'{prefix}{key}/')
      if sub is not None:
        out[key] = sub
    return out or None
  return tree if prefix[:-1] in keep else None


def _shape(x) -> tuple[int, ...]:
  return tuple(int(d) for d in x.shape)


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


def _to_device(tree):
  """Host arrays onto this process's first device (where a fresh state lives).

  Restoring to the host first and placing the arrays here, rather than where
  they were at save time, is what lets a checkpoint written on 8 devices restore
  on 1 (and vice versa).
  """
  return jax.device_put(tree, jax.local_devices()[0])


# --- Checksums ----------------------------------------------------------------


def checksums(tree: Any) -> dict[str, int]:
  """{'params/stem/conv1/kernel': CRC-32 of the array's bytes} for a nested dict.

  Computed on the host copies that are handed to orbax (zlib's CRC-32 runs at
  ~1.5 GB/s on one core and needs no compilation, unlike a jitted hash).
  """
  return {k: zlib.crc32(np.ascontiguousarray(v).reshape(-1).view(np.uint8))
          for k, v in flatten(tree).items()}


def _verify(tree: Any, expected: Mapping[str, int] | None) -> None:
  """Raises CorruptCheckpointError when restored arrays differ from what was saved."""
  if not expected:  # A record without checksums: nothing to check against.
    return
  actual = checksums(tree)
  bad = sorted(k for k, v in actual.items() if k in expected and expected[k] != v)
  if bad:
    raise CorruptCheckpointError(
        f'{len(bad)} array(s) differ from what was saved (CRC-32 mismatch): '
        + ', '.join(bad[:_MAX_LISTED]) + (' ...' if len(bad) > _MAX_LISTED else ''))


# --- Structure checks ---------------------------------------------------------


def _fmt(shape: tuple[int, ...]) -> str:
  return '(' + ','.join(map(str, shape)) + (',' if len(shape) == 1 else '') + ')'


def _rank(path: str) -> tuple[int, str]:
  """Sort order for messages: weights first, then statistics, then the rest."""
  return (0 if path.startswith('params/') else
          1 if path.startswith('batch_stats/') else 2, path)


def describe_mismatch(saved: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
  """Differences between two {path: array-like} maps (shapes, missing, unexpected).

  When weights or statistics differ, differences elsewhere (optimizer moments
  that mirror the weights) are left out: they say nothing new.
  """
  common = sorted(set(saved) & set(model), key=_rank)
  differing = [k for k in common if _shape(saved[k]) != _shape(model[k])]
  missing = sorted(set(model) - set(saved), key=_rank)
  unexpected = sorted(set(saved) - set(model), key=_rank)
  if any(_rank(k)[0] < 2 for k in differing + missing + unexpected):
    differing, missing, unexpected = (
        [k for k in keys if _rank(k)[0] < 2] for keys in (differing, missing, unexpected))
  lines = [f'{k}: checkpoint {_fmt(_shape(saved[k]))} vs model {_fmt(_shape(model[k]))}'
           for k in differing]

  def listing(title, keys):
    more = f' ... ({len(keys)} in all)' if len(keys) > _MAX_LISTED else ''
    return f'{title}: ' + ', '.join(keys[:_MAX_LISTED]) + more

  if missing:
    lines.append(listing('missing in checkpoint', missing))
  if unexpected:
    lines.append(listing('unexpected in checkpoint', unexpected))
  return lines


def _mismatch_error(where: str, lines: list[str], hint: str) -> ConfigError:
  shown = lines[:_MAX_LISTED] + ([f'... and {len(lines) - _MAX_LISTED} more']
                                 if len(lines) > _MAX_LISTED else [])
  return ConfigError(f'checkpoint {where} does not match the model: '
                     + '; '.join(shown) + f'. {hint}')


# --- Retention ----------------------------------------------------------------


def _best_metric(metrics: Mapping[str, Any] | None) -> float:
  """The retention score of a step: its eval top-1, -inf when it was not evaluated."""
  value = (metrics or {}).get(BEST_METRIC)
  return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def _preservation_policy(keep_last: int):
  """Keep the newest `keep_last` steps, plus the single best by eval top-1."""
  return preservation_lib.AnyPreservationPolicy([
      preservation_lib.LatestN(n=keep_last),
      preservation_lib.BestN(get_metric_fn=_best_metric, n=1,
                             keep_checkpoints_without_metrics=False),
  ])


def _finite_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
          and math.isfinite(float(v))}


# --- Paths --------------------------------------------------------------------


def _is_step_name(name: str) -> bool:
  return name.isdigit() and (name == '0' or not name.startswith('0'))


def _step_dirs(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if _is_step_name(n) and os.path.isdir(os.path.join(directory, n)))


def resolve(path: str) -> tuple[str, int | None]:
  """(checkpoints directory, step or None for "newest") for a user-given path.

  Accepts a workdir (containing `checkpoints/`), a checkpoints directory, or one
  step directory inside it.

  Raises:
    ConfigError: nothing that looks like a checkpoint is there.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise ConfigError(f'checkpoint path {path} does not exist')
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  if _step_dirs(path):
    return path, None
  name = os.path.basename(path)
  if _is_step_name(name) and os.path.isdir(os.path.join(path, _STATE)):
    return os.path.dirname(path), int(name)
  raise ConfigError(
      f'no checkpoint in {path}: expected a workdir, its checkpoints/ directory, or '
      'a step directory such as checkpoints/1000')


def _move_aside(directory: str, step: int) -> str:
  """Renames `directory/step` to `directory/corrupt-step[.N]`; returns the new path."""
  src = os.path.join(directory, str(step))
  dst = os.path.join(directory, f'{CORRUPT_PREFIX}{step}')
  n = 1
  while os.path.exists(dst):
    dst = os.path.join(directory, f'{CORRUPT_PREFIX}{step}.{n}')
    n += 1
  os.rename(src, dst)
  return dst


def _sync(name: str) -> None:
  """A barrier across processes (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


# --- The manager ----------------------------------------------------------------


class CheckpointManager:
  """Saves and restores the train state under `WORKDIR/checkpoints` (or any directory).

  Args:
    workdir: the run's workdir; checkpoints go to `workdir/checkpoints`.
    config: reads `keep_checkpoints` and `checkpoint_every_steps` (validated).
    directory: use this checkpoints directory instead of `workdir/checkpoints`.
    read_only: never write, move or clean up anything (evaluation, warm starts,
      reading another run's checkpoints while it trains).
  """

  def __init__(self, workdir: str | None = None,
               config: ml_collections.ConfigDict | None = None, *,
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
      keep = _validate(config)
      self._recover_directory()
      options = ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=True,
          # best_fn makes orbax write and re-read each step's metrics; the
          # preservation policy (which overrides best_fn for deletion) keeps the
          # last K plus the best.
          best_fn=_best_metric, preservation_policy=_preservation_policy(keep),
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
    if not os.path.isdir(self.directory):
      return
    if jax.process_index() == 0:
      for name in sorted(os.listdir(self.directory)):
        if ocp.path.step.TMP_DIR_SUFFIX in name:
          logging.warning('Removing incomplete checkpoint %s (a save that was '
                          'interrupted; never finalized).',
                          os.path.join(self.directory, name))
      for step in _step_dirs(self.directory):
        metrics_file = os.path.join(self.directory, str(step), 'metrics', 'metrics')
        if not os.path.exists(metrics_file):
          continue
        try:
          with open(metrics_file, encoding='utf-8') as f:
            json.load(f)
        except (OSError, ValueError) as e:
          self._report_corrupt(step, f'unreadable metrics file ({e})')
    _sync('resnet_jax:checkpoint_recover')

  def _report_corrupt(self, step: int, reason: str) -> None:
    """Warns naming the step; in write mode moves it aside (process 0 only)."""
    path = os.path.join(self.directory, str(step))
    if self.read_only:
      logging.warning('Skipping checkpoint %s: %s', path, reason)
      return
    if jax.process_index() == 0:
      moved = _move_aside(self.directory, step)
      logging.warning('Skipping checkpoint %s: %s. Moved it to %s (delete it by '
                      'hand once inspected).', path, reason, moved)

  # -- queries --

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the highest eval top-1 among those kept (None if none evaluated)."""
    self._manager.reload()
    scored = [(_best_metric(self._manager.metrics(s)), s) for s in self.all_steps()]
    scored = [(m, s) for m, s in scored if m > -math.inf]
    return max(scored)[1] if scored else None

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def read_record(self, step: int) -> dict[str, Any]:
    """The JSON record of a step (step, epoch, data position, metrics, ...)."""
    return self._manager.restore(step, args=ocp.args.Composite(
        **{_RECORD: ocp.args.JsonRestore()}))[_RECORD]

  def saved_shapes(self, step: int) -> dict[str, Any]:
    """{path: ArrayMetadata} of the saved state (reads metadata only)."""
    tree = self._manager.item_metadata(step)[_STATE]
    if tree is None:
      raise CorruptCheckpointError('no state item')
    return flatten(getattr(tree, 'tree', tree))

  # -- save --

  def save(self, step: int, state, *, epoch: float, metrics: Mapping[str, Any],
           best_metrics: Mapping[str, Any] | None = None) -> bool:
    """Starts an asynchronous save of the (unreplicated) `state` at `step`.

    Blocks only while the arrays are copied to the host (and for any previous
    save still in flight); files are written in the background.

    Args:
      step: the number of optimizer steps taken; also the data position (the
        input pipeline is a pure function of (seed, step)).
      state: an unreplicated TrainState (or any flax-serializable pytree).
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
    tree = _as_arrays(flax.serialization.to_state_dict(state))
    record = {
        'format_version': FORMAT_VERSION,
        'step': int(step),
        'epoch': float(epoch),
        # Where the input pipeline resumes: create_train_iter(start_step=...).
        'data_position': int(step),
        'metrics': _finite_floats(metrics),
        'device_count': jax.device_count(),
        'process_count': jax.process_count(),
        'time': time.time(),
    }
    # Host copies: orbax writes numpy arrays from process 0 only, and the
    # background writer never sees buffers that the next (donating) step reuses.
    host = jax.device_get(tree)
    record['crc32'] = checksums(host)
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

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the save in flight (if any) to be finalized, then releases orbax."""
    self._manager.wait_until_finished()
    self._manager.close()

  # -- restore --

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
    _verify(restored, record.get('crc32'))
    return restored, record

  def _candidates(self, step: int | None) -> list[int]:
    if step is not None:
      if step not in self.all_steps():
        raise ConfigError(f'no finalized checkpoint at {self.step_path(step)}; '
                          f'steps in {self.directory}: {self.all_steps() or "none"}')
      return [step]
    return sorted(self.all_steps(), reverse=True)

  def restore_latest(self, template) -> tuple[Any, dict[str, Any]] | None:
    """Restores the newest usable checkpoint into the structure of `template`.

    Newest first: a step that cannot be read or fails verification is skipped
    with a warning naming it (and, unless read-only, moved to `corrupt-STEP`), and
    the next older one is tried.

    Args:
      template: an unreplicated TrainState with the model's shapes (its values
        are not used).

    Returns:
      (state, record), or None when there is no usable checkpoint.

    Raises:
      ConfigError: the checkpoint was written for a different model or optimizer
        (names the mismatched arrays and their shapes).
    """
    target_tree = _as_arrays(flax.serialization.to_state_dict(template))
    for step in self._candidates(None):
      try:
        saved = self.saved_shapes(step)
      except Exception as e:  # pylint: disable=broad-exception-caught
        self._skip(step, e)
        continue
      lines = describe_mismatch(saved, flatten(target_tree))
      if lines:
        raise _mismatch_error(
            self.step_path(step), lines,
            'Resuming needs the same model and optimizer: use a new --workdir (with '
            '--config.init_from=<this checkpoint> to fine-tune from it)')
      try:
        restored, record = self.restore_host(step, target_tree)
      except Exception as e:  # pylint: disable=broad-exception-caught
        self._skip(step, e)
        continue
      return flax.serialization.from_state_dict(template, _to_device(restored)), record
    return None

  def _skip(self, step: int, error: Exception) -> None:
    self._report_corrupt(step, f'{type(error).__name__}: {_first_line(error)}')
    _sync('resnet_jax:checkpoint_skip')
    self._manager.reload()

  def restore_weights(self, params, batch_stats, *, step: int | None = None,
                      skip_head: bool = False, strict_step: bool = False,
                      hint: str = _EVAL_HINT) -> tuple[Any, Any, dict[str, Any]]:
    """Restores params and BatchNorm statistics only (no optimizer state).

    Args:
      params, batch_stats: the model's trees (shapes only are used; their values
        are kept for anything left out).
      step: a specific step; None = the newest usable one.
      skip_head: leave out the classifier ('head/fc') when its shape differs.
      strict_step: with `step` given, a corrupt step is an error rather than a
        warning (the user asked for that one).
      hint: what to do about a shape mismatch (ends the error message).

    Returns:
      (params, batch_stats, info): info has 'step', 'path', 'record' and
      'skipped' (the left-out paths).

    Raises:
      ConfigError: no usable checkpoint, or the shapes do not match.
    """
    model = flatten({'params': params, 'batch_stats': batch_stats})
    for candidate in self._candidates(step):
      path = self.step_path(candidate)
      try:
        saved = {k: v for k, v in self.saved_shapes(candidate).items()
                 if k.startswith(('params/', 'batch_stats/'))}
      except Exception as e:  # pylint: disable=broad-exception-caught
        if strict_step and step is not None:
          raise ConfigError(f'checkpoint {path} is unreadable: {_first_line(e)}') from e
        self._report_corrupt(candidate, f'{type(e).__name__}: {_first_line(e)}')
        continue
      skipped = []
      if skip_head:
        skipped = sorted(k for k in model if k.startswith(HEAD_PREFIX) and (
            k not in saved or _shape(saved[k]) != _shape(model[k])))
      lines = describe_mismatch({k: v for k, v in saved.items() if k not in skipped},
                                {k: v for k, v in model.items() if k not in skipped})
      if lines:
        raise _mismatch_error(path, lines, hint)
      keep = [k for k in model if k not in skipped]
      target = _select({'params': params, 'batch_stats': batch_stats}, keep)
      try:
        restored, record = self.restore_host(candidate, target, partial=True)
      except Exception as e:  # pylint: disable=broad-exception-caught
        if strict_step and step is not None:
          raise ConfigError(f'checkpoint {path} is unreadable: {_first_line(e)}') from e
        self._report_corrupt(candidate, f'{type(e).__name__}: {_first_line(e)}')
        continue
      merged = {**flatten({'params': params, 'batch_stats': batch_stats}),
                **flatten(_to_device(restored))}
      info = {'step': candidate, 'path': path, 'record': record, 'skipped': skipped}
      return (_unflatten_into(params, merged, 'params/'),
              _unflatten_into(batch_stats, merged, 'batch_stats/'), info)
    raise ConfigError(f'no usable checkpoint in {self.directory} (see the warnings above)')


def _validate(config: ml_collections.ConfigDict) -> int:
  """Checks the checkpoint fields of the config; returns keep_checkpoints."""
  keep = config.keep_checkpoints
  if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
    raise ConfigError(f'keep_checkpoints={keep!r} must be an integer >= 1')
  every = config.checkpoint_every_steps
  if isinstance(every, bool) or not isinstance(every, int) or (every < 1 and every != -1):
    raise ConfigError(
        f'checkpoint_every_steps={every!r} must be a positive number of steps, or -1 '
        '(once per epoch)')
  return keep


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  line = text[0] if text else repr(error)
  return line if len(line) <= 300 else line[:300] + '...'


def _unflatten_into(tree: Any, flat: Mapping[str, Any], prefix: str) -> Any:
  """`tree` (nested dicts, possibly FrozenDict) with leaves replaced from `flat`."""
  if isinstance(tree, Mapping):
    out = {k: _unflatten_into(v, flat, f'{prefix}{k}/') for k, v in tree.items()}
    return flax.core.freeze(out) if isinstance(tree, flax.core.FrozenDict) else out
  if tree is None:
    return None
  return flat.get(prefix[:-1], tree)


# --- Entry points used by train / evaluate --------------------------------------


def load_weights(path: str, params, batch_stats, *, skip_head: bool = False,
                 hint: str = _EVAL_HINT) -> tuple[Any, Any, dict[str, Any]]:
  """Reads params + batch_stats from a workdir, checkpoints dir or step dir.

  Read-only: a corrupt step is skipped with a warning (newest first) when `path`
  names a directory of steps, and is an error when it names one step.

  Raises:
    ConfigError: the path holds no usable checkpoint or the shapes differ.
  """
  directory, step = resolve(path)
  manager = CheckpointManager(directory=directory, read_only=True)
  try:
    return manager.restore_weights(params, batch_stats, step=step, skip_head=skip_head,
                                   strict_step=True, hint=hint)
  finally:
    manager.close()


def read_state(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """A checkpoint as saved, without building a model: (state dict, record).

  The state is the nested dict of numpy arrays that was saved (step, params,
  batch_stats, opt_state, rng, ...), checksums verified; `path` is a workdir,
  checkpoints directory (newest step) or step directory. For inspection,
  comparisons and export.

  Raises:
    ConfigError: no checkpoint there.
    CorruptCheckpointError: the newest (or named) step is damaged.
  """
  directory, step = resolve(path)
  manager = CheckpointManager(directory=directory, read_only=True)
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise ConfigError(f'no finalized checkpoint in {directory}')
    return manager.restore_host(step)
  finally:
    manager.close()


def init_from(path: str, state, *, skip_head: bool = True):
  """Warm start: `state` with params and BatchNorm statistics from another run.

  The optimizer state and step stay those of `state` (fresh: step 0). With
  `skip_head`, a classifier whose shape differs (another number of classes) keeps
  `state`'s fresh initialisation; any other difference is a ConfigError naming
  the arrays and shapes.
  """
  hint = ('Check --config.model and num_classes' + (
      '' if skip_head else ' (--config.init_from_skip_head=True leaves out a '
      'classifier of another size)'))
  params, batch_stats, info = load_weights(path, state.params, state.batch_stats,
                                           skip_head=skip_head, hint=hint)
  if info['skipped']:
    logging.info('init_from: classifier left out (shape differs): %s',
                 ', '.join(info['skipped']))
  logging.info('init_from: loaded weights of step %d from %s', info['step'], info['path'])
  return state.replace(params=params, batch_stats=batch_stats)
