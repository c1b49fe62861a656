"""Reading another run's checkpoint: weights for evaluation and fine-tuning.

`--checkpoint` (evaluate) and `--config.init_from` (fine-tuning) accept a
workdir, its `checkpoints/` directory, or one step directory. Everything here
opens checkpoints read-only: a damaged step is skipped with a warning (newest
first) when a directory of steps was named, and is an error when one step was.
"""

import os
from typing import Any

from absl import logging

from resnet_jax.checkpoint import integrity
from resnet_jax.checkpoint import manager as manager_lib
from resnet_jax.errors import ConfigError

# The classifier: `Head` module, Dense named 'fc' (resnet_jax/models/resnet.py).
HEAD_PREFIX = 'params/head/fc/'
_EVAL_HINT = 'Pass the --config (model, num_classes) the checkpoint was trained with'


def resolve(path: str) -> tuple[str, int | None]:
  """(checkpoints directory, step or None for "newest") for a user-given path.

  Raises:
    ConfigError: nothing that looks like a checkpoint is there.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise ConfigError(f'checkpoint path {path} does not exist')
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  if manager_lib.step_dirs(path):
    return path, None
  name = os.path.basename(path)
  if manager_lib.is_step_name(name) and os.path.isdir(os.path.join(path, 'state')):
    return os.path.dirname(path), int(name)
  raise ConfigError(
      f'no checkpoint in {path}: expected a workdir, its checkpoints/ directory, or '
      'a step directory such as checkpoints/1000')


def workdir_of(path: str) -> str | None:
  """The workdir (holding config.json) of a checkpoint path, if it has one."""
  directory, _ = resolve(path)
  workdir = os.path.dirname(directory)
  return workdir if os.path.isfile(os.path.join(workdir, 'config.json')) else None


def _restore_weights(manager: manager_lib.CheckpointManager, params, batch_stats, *,
                     step: int | None, skip_head: bool, hint: str, ema: bool = False):
  """Params and BatchNorm statistics of the newest usable (or the given) step."""
  root = 'ema/' if ema else ''  # The EMA's copies live under 'ema' in the state.
  model = {root + k: v for k, v in
           integrity.flatten({'params': params, 'batch_stats': batch_stats}).items()}
  for candidate in manager.candidates(step):
    path = manager.step_path(candidate)
    try:
      saved = {k: v for k, v in manager.saved_shapes(candidate).items()
               if k.startswith((root + 'params/', root + 'batch_stats/'))}
      if ema and not saved:
        raise ConfigError(f'checkpoint {path} holds no EMA weights (it was trained '
                          'without --config.ema_decay): leave out the EMA option')
      skipped = []
      if skip_head:
        skipped = sorted(k for k in model if k.startswith(root + HEAD_PREFIX) and (
            k not in saved or integrity.shape(saved[k]) != integrity.shape(model[k])))
      lines = integrity.describe_mismatch(
          {k: v for k, v in saved.items() if k not in skipped},
          {k: v for k, v in model.items() if k not in skipped})
      if lines:
        raise integrity.mismatch_error(path, lines, hint)
      target = integrity.unflatten({k: v for k, v in model.items() if k not in skipped})
      restored, record = manager.restore_host(candidate, target, partial=True)
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-exception-caught
      if step is not None:  # The user named this step: no silent fallback.
        raise ConfigError(f'checkpoint {path} is unreadable: '
                          f'{integrity.first_line(e)}') from e
      manager.report_corrupt(candidate, f"{type(e).__name__}: {integrity.first_line(e)}")
      continue
    merged = integrity.unflatten({**model, **integrity.flatten(restored)})
    merged = merged['ema'] if ema else merged
    info = {'step': candidate, 'path': path, 'record': record,
            'skipped': [k[len(root):] for k in skipped]}
    return merged['params'], merged.get('batch_stats', {}), info
  raise ConfigError(f'no usable checkpoint in {manager.directory} (see the warnings above)')


def load_weights(path: str, params, batch_stats, *, skip_head: bool = False,
                 hint: str = _EVAL_HINT, ema: bool = False) -> tuple[Any, Any, dict[str, Any]]:
  """Reads params + batch_stats (host numpy) from a workdir, checkpoints dir or step dir.

  Args:
    path: where the checkpoint is.
    params, batch_stats: the model's trees (their shapes are what is read;
      their values are kept for anything left out).
    skip_head: leave out the classifier ('head/fc') where its shape differs.
    hint: what to do about a shape mismatch (ends the error message).
    ema: read the EMA of the weights (a run with ema_decay) instead.

  Returns:
    (params, batch_stats, info): info has 'step', 'path', 'record' and
    'skipped' (the left-out paths).

  Raises:
    ConfigError: the path holds no usable checkpoint or the shapes differ.
  """
  directory, step = resolve(path)
  manager = manager_lib.CheckpointManager(directory=directory, read_only=True)
  try:
    return _restore_weights(manager, params, batch_stats, step=step,
                            skip_head=skip_head, hint=hint, ema=ema)
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
  manager = manager_lib.CheckpointManager(directory=directory, read_only=True)
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise ConfigError(f'no finalized checkpoint in {directory}')
    return manager.restore_host(step)
  finally:
    manager.close()


def init_from(path: str, state, *, skip_head: bool = True, ema: bool = False
              ) -> tuple[Any, Any]:
  """Warm start: params and BatchNorm statistics for `state` from another run (its
  EMA's with `ema`).

  The optimizer state and step stay those of `state` (fresh: step 0). With
  `skip_head`, a classifier whose shape differs (another number of classes) keeps
  `state`'s fresh initialisation; any other difference is a ConfigError naming
  the arrays and shapes.

  Returns:
    (params, batch_stats) as host arrays; `parallel.replicate` them.
  """
  hint = ('Check --config.model and num_classes' + (
      '' if skip_head else ' (--config.init_from_skip_head=True leaves out a '
      'classifier of another size)'))
  from resnet_jax import parallel  # pylint: disable=g-import-not-at-top
  params, batch_stats = parallel.to_host((state.params, state.batch_stats))
  params, batch_stats, info = load_weights(path, params, batch_stats,
                                           skip_head=skip_head, hint=hint, ema=ema)
  if info['skipped']:
    logging.info('init_from: classifier left out (shape differs): %s',
                 ', '.join(info['skipped']))
  logging.info('init_from: loaded weights of step %d from %s', info['step'], info['path'])
  return params, batch_stats
