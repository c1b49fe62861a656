r"""Sweeps: grids of `resnet_jax.main` runs defined as code, run, resumed and reported.

A sweep file (e.g. `experiments/depth_shortcut.py`) defines
`get_sweep(arg=None) -> Sweep`, a list of `Point`s (a name, a config spec and
config overrides, as on the `main` command line) plus the paper's numbers to
print beside ours, and which tags the report plots and averages over.
`product(...)` expands a grid in a few lines:

    points = sweep.product(
        name='d{depth}-{shortcut}-s{seed}', group='d{depth}-{shortcut}',
        config='configs/cifar10.py:depth={depth},shortcut={shortcut},recipe=paper',
        overrides=lambda seed, **_: {'seed': seed},
        depth=[20, 56], shortcut=['A', 'none'], seed=[0, 1])
    return sweep.Sweep(points, x='depth', series='shortcut', average_over='seed')

The command line (`python -m resnet_jax.sweep run|list|report|slurm SWEEP
--workdir=DIR`) is `__main__.py`. The package, along its seams:

- `grid`: Point, Sweep, product, validate, load_sweep, select, parse_set.
- `state`: a point's files on disk (status.json, log.txt, metrics.jsonl) and
  what "finished" means.
- `runner`: one locked, resumable `resnet_jax.main` process per point,
  signals forwarded, `--parallel`.
- `slurm`: the job-array script.
- `report` (CSV, Markdown) and `plots` (PNG).
"""

from resnet_jax.sweep.grid import load_sweep
from resnet_jax.sweep.grid import parse_set
from resnet_jax.sweep.grid import Point
from resnet_jax.sweep.grid import product
from resnet_jax.sweep.grid import select
from resnet_jax.sweep.grid import Sweep
from resnet_jax.sweep.grid import validate
from resnet_jax.sweep.grid import with_overrides
from resnet_jax.sweep.report import write_report
from resnet_jax.sweep.runner import exit_status
from resnet_jax.sweep.runner import Outcome
from resnet_jax.sweep.runner import point_command
from resnet_jax.sweep.runner import resolve_config_path
from resnet_jax.sweep.runner import run_points
from resnet_jax.sweep.slurm import slurm_script
from resnet_jax.sweep.state import failure_reason
from resnet_jax.sweep.state import is_finished
from resnet_jax.sweep.state import read_status
from resnet_jax.sweep.state import write_status

__all__ = [
    'Outcome', 'Point', 'Sweep', 'exit_status', 'failure_reason', 'is_finished',
    'load_sweep', 'parse_set', 'point_command', 'product', 'read_status',
    'resolve_config_path', 'run_points', 'select', 'slurm_script', 'validate',
    'with_overrides', 'write_report', 'write_status',
]
