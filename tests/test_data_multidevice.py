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


def test_train_shards_are_disjoint_and_equal(tmp_path):
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


def _check_eval(tmp):
  import jax
  import numpy as np
  from resnet_jax import data
  from test_data import image_ids, make_config, write_folder
  truth = write_folder(os.path.join(tmp, 'src'), {'train': 16, 'test': 15})['test']
  assert len(jax.devices()) == 8
  # (processes, devices per process, global eval batch)
  for procs, per, batch in [(1, 8, 8), (1, 8, 16), (2, 4, 8), (2, 4, 24), (4, 2, 8),
                            (3, 2, 6), (2, 3, 6), (8, 1, 8), (1, 1, 3)]:
    for on_device in (False, True):
      config = make_config(dataset=f'folder:{tmp}/src', data_dir=f'{tmp}/tfds',
                           augment='none', batch_size=batch, eval_batch_size=batch,
                           on_device_data=on_device)
      meta = data.dataset_meta(config)
      ids, counts = [], []
      for p in range(procs):
        with simulate(procs, p, per):
          batches = list(data.create_eval_iter(config, meta))
          # Sharded over this process's devices, per_device examples each.
          shards = batches[0]['mask'].addressable_shards
          assert sorted(s.device.id for s in shards) == list(range(p * per, (p + 1) * per))
          assert {s.data.shape for s in shards} == {(batch // procs // per,)}
        counts.append(len(batches))
        for b in batches:
          b = jax.tree.map(np.asarray, b)
          assert b['image'].shape == (batch // procs, 16, 16, 3)
          got = image_ids(b['image'])[b['mask']].tolist()
          assert b['label'][b['mask']].tolist() == [truth[i] for i in got]
          ids += got
      key = (procs, per, batch, on_device)
      assert len(set(counts)) == 1, (key, counts)  # Same count everywhere.
      assert sorted(ids) == sorted(truth), (key, sorted(ids))  # Each once.
  print('eval OK')


def _check_train(tmp):
  import jax
  import numpy as np
  from resnet_jax import data
  from resnet_jax.errors import ConfigError
  from test_data import image_ids, make_config, write_folder
  truth = write_folder(os.path.join(tmp, 'src'), {'train': 42, 'test': 2})['train']
  # The tf.data path only: on-device data is the same global batches on any
  # topology (each device gathers its rows of them), which a process simulated
  # on its own mesh cannot show; tests/test_data_real.py runs two processes.
  for procs, per in [(1, 8), (2, 4), (4, 2)]:
    for on_device in (False,):
      config = make_config(dataset=f'folder:{tmp}/src', data_dir=f'{tmp}/tfds',
                           augment='cifar', batch_size=8, on_device_data=on_device)
      meta = data.dataset_meta(config)
      steps = data.steps_per_epoch(config, meta)
      assert steps == 5
      shards = []
      for p in range(procs):
        with simulate(procs, p, per):
          it = data.create_train_iter(config, meta)
          batches = [jax.tree.map(np.asarray, next(it)) for _ in range(3 * steps)]
        assert batches[0]['image'].shape == (8 // procs, 16, 16, 3)
        ids = np.concatenate([image_ids(b['image']).ravel() for b in batches])
        for epoch in np.split(ids, 3):  # Distinct examples within an epoch.
          assert len(set(epoch)) == len(epoch) == 40 // procs
        shards.append(set(ids))
      # Processes read disjoint equal shards; the remainder 42 % procs is dropped.
      union = set().union(*shards)
      assert sum(map(len, shards)) == len(union), [sorted(s) for s in shards]
      assert len(union) <= 42 - 42 % procs and union <= set(truth)
  from resnet_jax import validation
  config = make_config(dataset=f'folder:{tmp}/src', data_dir=f'{tmp}/tfds', batch_size=12)
  try:
    validation.validate(config)
    raise AssertionError('batch_size=12 on 8 devices was accepted')
  except ConfigError as e:
    assert 'batch_size=12' in str(e) and '8 (1 process(es) x 8 local' in str(e), e
  print('train OK')


if __name__ == '__main__':
  sys.path.insert(0, HERE)
  {'eval': _check_eval, 'train': _check_train}[sys.argv[1]](sys.argv[2])
