"""How a run is laid out over devices and hosts: the mesh, shardings, batch split.

Every device of every process is on one `jax.sharding.Mesh` with two axes:

    BN_GROUP_AXIS ('bn_group')  groups of devices whose BatchNorm statistics are
                                computed separately ("ghost" BatchNorm); size 1
                                by default (one group of all devices)
    BATCH_AXIS    ('batch')     the devices of one group; BatchNorm averages its
                                batch statistics over this axis

The batch is split over both (`DATA_AXES`), so each device holds
`global_batch / device_count` examples; gradients and metrics are averaged
over both. The train state is replicated: one global array per leaf, the same
value on every device, no leading device axis.

The steps are written per device, as `jax.pmap` programs were, and run as
`jax.jit(jax.shard_map(step, mesh=..., in_specs=..., out_specs=...))`
(see `train.py`). Batches are global arrays sharded over DATA_AXES, built
from each process's own shard with `jax.make_array_from_process_local_data`
(`shard_batch`).

The topology functions (`process_index`, `process_count`, `mesh_devices`)
are module-level so that tests can simulate several processes in one: a
simulated process builds its mesh from its own devices only.
"""

import dataclasses
import functools
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from resnet_jax.errors import ConfigError

BN_GROUP_AXIS = 'bn_group'
BATCH_AXIS = 'batch'
DATA_AXES = (BN_GROUP_AXIS, BATCH_AXIS)


def process_index() -> int:
  """This process's index (jax.process_index)."""
  return jax.process_index()


def process_count() -> int:
  """Number of processes (jax.process_count)."""
  return jax.process_count()


def mesh_devices() -> list[Any]:
  """Every device of every process, in mesh order (jax.devices)."""
  return jax.devices()


def num_local_devices() -> int:
  """How many of the mesh's devices this process feeds."""
  return sum(d.process_index == jax.process_index() for d in mesh_devices())


def local_mesh_devices(mesh: jax.sharding.Mesh) -> list[Any]:
  """This process's devices in the order they appear on the mesh."""
  return [d for d in mesh.devices.flat if d.process_index == jax.process_index()]


@dataclasses.dataclass(frozen=True)
class BatchLayout:
  """How one global batch is split over processes and devices."""
  global_size: int
  per_process: int
  per_device: int
  num_local_devices: int


def batch_layout(global_size: int, field: str = 'batch_size') -> BatchLayout:
  """Splits a global batch size over all devices of all processes.

  The one check that a batch size divides over the devices; every input path
  and the trainer use it.

  Args:
    global_size: the global batch size (over every device of every process).
    field: the config field it came from, named in the error message.

  Raises:
    ConfigError: `global_size` is not a positive multiple of the device count.
  """
  n_proc = process_count()
  n_local = num_local_devices()
  n_total = n_proc * n_local
  if isinstance(global_size, bool) or not isinstance(global_size, int) or global_size <= 0:
    raise ConfigError(f'{field}={global_size!r} must be a positive integer (a multiple '
                      f'of the {n_total} devices)')
  if global_size % n_total:
    raise ConfigError(
        f'{field}={global_size} must be a multiple of the number of devices, '
        f'{n_total} ({n_proc} process(es) x {n_local} local device(s)); e.g. '
        f'--config.{field}={max(1, global_size // n_total) * n_total}')
  return BatchLayout(global_size=global_size, per_process=global_size // n_proc,
                     per_device=global_size // n_total, num_local_devices=n_local)


def bn_group_size(value: int) -> int:
  """Devices per BatchNorm group: `value`, or all of them when it is 0.

  Raises:
    ConfigError: the size does not divide the device count.
  """
  n = len(mesh_devices())
  k = value or n
  if isinstance(k, bool) or not isinstance(k, int) or k < 0 or n % k:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    raise ConfigError(
        f'model.bn_group_size={value!r} must divide the {n} devices; valid: 0 (all '
        f'devices) or one of {divisors}')
  return k


def make_mesh(bn_group: int = 0) -> jax.sharding.Mesh:
  """The run's mesh over every device: (groups, devices per group).

  Args:
    bn_group: devices per BatchNorm group (model.bn_group_size); 0 = one
      group of all devices.
  """
  n = len(mesh_devices())
  k = bn_group_size(bn_group)
  return _mesh(n // k, k, tuple(mesh_devices()))


@functools.cache
def _mesh(groups: int, per_group: int, devices: tuple) -> jax.sharding.Mesh:
  # Cached: one Mesh object per layout, so shardings built from it compare
  # equal and jitted steps see the same input shardings every call.
  return jax.make_mesh((groups, per_group), DATA_AXES, devices=list(devices))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The sharding of the train state: every device holds the whole array."""
  return NamedSharding(mesh, P())


def data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The sharding of batches: the leading (example) axis split over all devices."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Host (or single-device) values -> global arrays replicated over the mesh.

  Every process must pass the same values (a restored checkpoint, a fresh
  state from the same seed); each fills only its own devices.
  """
  sharding = replicated(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def shard_batch(local: Any, mesh: jax.sharding.Mesh) -> Any:
  """This process's share of a batch (host arrays) -> global arrays over the mesh.

  Leading axes of the leaves are this process's examples (`per_process`); the
  global array concatenates every process's share in mesh order.
  """
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                      local)


def to_host(tree: Any) -> Any:
  """Replicated global arrays -> numpy, read from this process's first copy.

  Works on every process of a multi-host run (`np.asarray` of an array that
  spans other hosts' devices does not); one transfer for the whole tree.
  """
  leaves, treedef = jax.tree.flatten(tree)
  local = [x.addressable_data(0) if isinstance(x, jax.Array) else x for x in leaves]
  return jax.tree.unflatten(treedef, [np.asarray(x) for x in jax.device_get(local)])


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order (numpy).

  What `shard_batch` was given, read back: for inspection and tests on any
  number of processes (np.asarray of the whole array needs every host's rows).
  """
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  starts = sorted({s.index[0].start or 0 for s in shards})
  # Replicated leading axes (none here) would repeat rows: keep one per start.
  unique = {s.index[0].start or 0: s for s in shards}
  return np.concatenate([np.asarray(unique[i].data) for i in starts])


def any_process(flag: bool) -> bool:
  """True on every process when the flag is set on any of them (a collective)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def sync(name: str) -> None:
  """A barrier across processes (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def describe(mesh: jax.sharding.Mesh) -> str:
  """'8 devices (2 processes x 4), BatchNorm over groups of 4' for logs."""
  n = mesh.devices.size
  groups, per_group = mesh.devices.shape
  bn = 'BatchNorm over all devices' if groups == 1 else (
      f'BatchNorm over {groups} groups of {per_group} devices')
  return f'{n} devices ({process_count()} process(es) x {n // process_count()}), {bn}'
