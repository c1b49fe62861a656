"""Sharding over devices and (simulated) processes, with 8 virtual CPU devices.

The checks run in a subprocess that sets XLA_FLAGS before importing JAX (this
file is also that subprocess's script). Several processes are simulated in
one by patching `resnet_jax.parallel`'s topology functions: process p of P
sees devices [p*D, (p+1)*D), and builds its mesh from them alone. tests/test_data_real.py checks two real JAX
processes.
"""

import contextlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _run(case, tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, __file__, case, str(tmp_path)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and f'{case} OK' in out.stdout, (
      out.stdout[-3000:] + out.stderr[-3000:])


def test_eval_covers_every_example_once_on_any_topology(tmp_path):
  _run('eval', tmp_path)


def test_train_batches_are_the_same_on_any_topology(tmp_path):
  _run('train', tmp_path)


@contextlib.contextmanager
def simulate(num_processes, index, devices_per_process):
  from resnet_jax import parallel
  import jax
  local = jax.devices()[index * devices_per_process:(index + 1) * devices_per_process]
  saved = parallel.process_count, parallel.process_index, parallel.mesh_devices
  parallel.process_count = lambda: num_processes
  parallel.process_index = lambda: index
  parallel.mesh_devices = lambda: list(local)
  try:
    yield
  finally:
    parallel.process_count, parallel.process_index, parallel.mesh_devices = saved


def _open(tmp, **overrides):
  from resnet_jax import data
  from test_data import make_config
  return data.open_input(data.resolve(make_config(
      dataset=f'folder:{tmp}/src', data_dir=f'{tmp}/data', num_workers=0, **overrides)))


def _check_eval(tmp):
  import jax
  import numpy as np
  from resnet_jax import parallel
  from test_data import image_ids, write_folder
  truth = write_folder(os.path.join(tmp, 'src'), {'train': 16, 'test': 15})['test']
  assert len(jax.devices()) == 8
  # (processes, devices per process, global eval batch)
  for procs, per, batch in [(1, 8, 8), (1, 8, 16), (2, 4, 8), (2, 4, 24), (4, 2, 8),
                            (3, 2, 6), (2, 3, 6), (8, 1, 8), (1, 1, 3)]:
    ids, counts = [], []
    for p in range(procs):
      with simulate(procs, p, per):
        inputs = _open(tmp, augment='none', batch_size=batch, eval_batch_size=batch)
        batches = list(inputs.eval_batches(parallel.make_mesh()))
        # Sharded over this process's devices, per_device examples each.
        shards = batches[0]['mask'].addressable_shards
        assert sorted(s.device.id for s in shards) == list(range(p * per, (p + 1) * per))
        assert {s.data.shape for s in shards} == {(batch // procs // per,)}
        counts.append(len(batches))
        for b in batches:
          images, mask = parallel.local_rows(b['image']), parallel.local_rows(b['mask'])
          labels = parallel.local_rows(b['label'])
          assert images.shape == (batch // procs, 16, 16, 3)
          got = image_ids(images)[mask].tolist()
          assert labels[mask].tolist() == [truth[i] for i in got]
          ids += got
    key = (procs, per, batch)
    assert len(set(counts)) == 1, (key, counts)  # Same count everywhere.
    assert sorted(ids) == sorted(truth), (key, sorted(ids))  # Each once.
  print('eval OK')


def _check_train(tmp):
  import numpy as np
  from resnet_jax import parallel
  from resnet_jax import specs
  from resnet_jax.errors import ConfigError
  from test_data import make_config, write_folder
  write_folder(os.path.join(tmp, 'src'), {'train': 42, 'test': 2})
  # The rows of every process, in process order, are the one-process batch:
  # the same examples, crops and flips on any topology.
  reference = None
  for procs, per in [(1, 8), (2, 4), (4, 2)]:
    steps = []
    for p in range(procs):
      with simulate(procs, p, per):
        inputs = _open(tmp, augment='cifar', batch_size=8, placement='host')
        assert inputs.steps_per_epoch == 5
        it = inputs.train_batches(parallel.make_mesh())
        steps.append([parallel.local_rows(next(it)['image']) for _ in range(7)])
    whole = [np.concatenate([s[i] for s in steps]) for i in range(7)]
    if reference is None:
      reference = whole
    for a, b in zip(reference, whole):
      np.testing.assert_array_equal(a, b)
  try:
    specs.resolve(make_config(batch_size=12))
    raise AssertionError('batch_size=12 on 8 devices was accepted')
  except ConfigError as e:
    assert 'batch_size=12' in str(e) and '8 (1 process(es) x 8 local' in str(e), e
  print('train OK')


if __name__ == '__main__':
  sys.path.insert(0, HERE)
  {'eval': _check_eval, 'train': _check_train}[sys.argv[1]](sys.argv[2])
