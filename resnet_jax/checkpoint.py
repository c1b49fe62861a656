"""Orbax checkpoints in the workdir: save, resume, warm-start.

Checkpoints hold the unreplicated train state, so they restore on any number
of devices, plus a small JSON record (step, epoch, metrics).
"""

import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp


class CheckpointManager:
  """Saves and restores the train state under `WORKDIR/checkpoints`."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.keep_checkpoints, create=True,
            enable_async_checkpointing=True))

  def restore_latest(self, template):
    """Restores the newest checkpoint into the structure of `template`.

    Returns:
      (state, record) or None when there is no checkpoint.
    """
    step = self._manager.latest_step()
    if step is None:
      return None
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(template)),
        record=ocp.args.JsonRestore()))
    return restored['state'], restored['record']

  def save(self, step: int, state, *, epoch: float, metrics: dict[str, Any]) -> None:
    """Starts an asynchronous save of `state` at `step`."""
    record = {'step': int(step), 'epoch': float(epoch),
              'metrics': {k: float(v) for k, v in metrics.items()
                          if isinstance(v, (int, float, np.floating))}}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)))

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def init_from(path: str, state, *, skip_head: bool = True):
  """Loads params and BatchNorm statistics from another run's checkpoint."""
  raise NotImplementedError('init_from arrives with the checkpoint issue')
