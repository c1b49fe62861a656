"""Orbax checkpoints in the workdir: save, resume, evaluate, warm-start.

    ckpt = checkpoint.CheckpointManager(workdir, keep=3)
    restored = ckpt.restore_latest(template)        # (host state, record) or None
    ckpt.save(step, state, epoch=..., metrics=..., best_metrics=...)
    ckpt.close()                                     # waits for the save in flight
    params, stats, info = checkpoint.load_weights(path, params, stats)  # evaluation
    params, stats = checkpoint.init_from(path, state, skip_head=True)   # fine-tuning
    state_dict, record = checkpoint.read_state(path)                    # inspection

Modules: `manager` (the workdir's checkpoints: save, resume, retention,
corrupt steps), `integrity` (checksums, shape checks, trees by path),
`warm_start` (reading another run's checkpoint by path).
"""

from resnet_jax.checkpoint.integrity import CorruptCheckpointError
from resnet_jax.checkpoint.integrity import flatten
from resnet_jax.checkpoint.manager import CheckpointManager
from resnet_jax.checkpoint.warm_start import HEAD_PREFIX
from resnet_jax.checkpoint.warm_start import init_from
from resnet_jax.checkpoint.warm_start import load_weights
from resnet_jax.checkpoint.warm_start import read_state
from resnet_jax.checkpoint.warm_start import resolve
from resnet_jax.checkpoint.warm_start import workdir_of

__all__ = [
    'CheckpointManager', 'CorruptCheckpointError', 'HEAD_PREFIX', 'flatten',
    'init_from', 'load_weights', 'read_state', 'resolve', 'workdir_of',
]
