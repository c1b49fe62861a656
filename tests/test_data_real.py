"""End-to-end checks with the trainer: real CIFAR-10 data, and two JAX processes.

* A CIFAR ResNet-8 trained 200 steps (batch 64) on the CIFAR-10 JPEG copy,
  indexed from its .tar.gz as a folder dataset, reaches >= 35 % test top-1
  (about 41 % measured; chance is 10 %). Skipped where the copy is absent.
* Two JAX processes on this machine (4 virtual CPU devices each, gloo
  collectives, one mesh over all 8 devices): their eval shards are disjoint and
  cover the split, both run the same number of eval batches, the eval metrics
  equal those of one process with 8 devices, and so do the loss curve and final
  eval of a short training run. This file is also the worker script.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CIFAR_COPY = os.path.abspath(
    os.path.join(ROOT, '..', 'shared', 'data', 'cifar10-jpeg-q75.tar.gz'))


@pytest.mark.skipif(not os.path.exists(CIFAR_COPY),
                    reason=f'the CIFAR-10 JPEG copy is not at {CIFAR_COPY}')
def test_cifar_resnet_learns_from_the_jpeg_copy(tmp_path):
  from resnet_jax import configlib
  from resnet_jax import train
  config = configlib.load(os.path.join(ROOT, 'configs', 'cifar10.py'), {
      'dataset': f'folder:{CIFAR_COPY}',
      # Set RESNET_JAX_TEST_DATA_DIR to keep the index between runs.
      'data_dir': os.environ.get('RESNET_JAX_TEST_DATA_DIR', str(tmp_path / 'data')),
      'download': False, 'model.depth': 8, 'batch_size': 64, 'eval_batch_size': 500,
      'num_train_steps': 200, 'warmup_steps': 20, 'learning_rate': 3e-3,
      'eval_every_steps': 200, 'log_every_steps': 50})
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  evals = [r for r in rows if 'eval_top1' in r]
  assert evals and evals[-1]['step'] == 200
  assert evals[-1]['eval_count'] == 10_000  # The whole test split, once.
  assert evals[-1]['eval_top1'] >= 0.35, evals[-1]
  assert result['eval_top1'] == evals[-1]['eval_top1']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _worker_env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)


def _two_and_one(tmp_path, mode: str) -> tuple[list[dict], dict]:
  """The worker's JSON from 2 processes x 4 devices, and from 1 process x 8."""
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, __file__, str(tmp_path), str(i), '2', f'127.0.0.1:{port}', mode],
      cwd=ROOT, env=_worker_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  single = subprocess.run([sys.executable, __file__, str(tmp_path), '0', '1', '', mode],
                          cwd=ROOT, env=_worker_env(8), capture_output=True, text=True,
                          timeout=300)
  outputs = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    outputs.append(out)
  assert single.returncode == 0, single.stderr[-3000:]
  two = [json.loads(o.strip().splitlines()[-1]) for o in outputs]
  return two, json.loads(single.stdout.strip().splitlines()[-1])


def test_two_processes_evaluate_like_one(tmp_path):
  sys.path.insert(0, HERE)
  from test_data import write_folder
  # 37 eval examples: shards of 19 and 18, batches that do not divide them.
  write_folder(str(tmp_path / 'src'), {'train': 16, 'test': 37})
  two, one = _two_and_one(tmp_path, 'eval')

  shards = [set(r['ids']) for r in two]
  assert not shards[0] & shards[1]
  assert sorted(two[0]['ids'] + two[1]['ids']) == sorted(one['ids']) == list(range(
      17, 17 + 37))  # write_folder numbers the test images after 16 train ones.
  assert two[0]['num_batches'] == two[1]['num_batches']
  for r in two:  # Both processes see the global (psum-ed) metrics.
    assert r['metrics']['eval_count'] == one['metrics']['eval_count'] == 37
    for k in ('eval_loss', 'eval_top1', 'eval_top5'):
      assert r['metrics'][k] == pytest.approx(one['metrics'][k], rel=1e-5), k


def test_two_processes_train_like_one(tmp_path):
  """2 JAX processes x 4 devices train as 1 process x 8: loss curve and final eval."""
  sys.path.insert(0, HERE)
  from test_data import write_folder
  write_folder(str(tmp_path / 'src'), {'train': 32, 'test': 13})
  two, one = _two_and_one(tmp_path, 'train')
  assert len(one['losses']) == 4 and two[1]['losses'] == []  # Process 0 writes.
  np.testing.assert_allclose(two[0]['losses'], one['losses'], rtol=1e-5)
  for r in two:
    assert r['result']['step'] == 4
    for k in ('eval_loss', 'eval_top1', 'eval_count'):
      assert r['result'][k] == pytest.approx(one['result'][k], rel=1e-5), k


def _worker(tmp, index: int, count: int, coordinator: str, mode: str) -> None:
  import jax
  if count > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=count,
                               process_id=index)
  from resnet_jax import metric_writers
  from resnet_jax import parallel
  from resnet_jax import specs
  from resnet_jax import train
  from test_data import image_ids, make_config
  config = make_config(dataset=f'folder:{tmp}/src', data_dir=f'{tmp}/data',
                       augment='none', batch_size=8, eval_batch_size=8,
                       num_classes=10, **{'model.depth': 8, 'model.family': 'cifar'})
  if mode == 'train':
    # Crop + flip inside the step, per example: the device layout must not
    # change what is computed.
    for key, value in {'augment': 'cifar', 'placement': 'device', 'optimizer': 'sgd',
                       'learning_rate': 0.05, 'num_train_steps': 4, 'warmup_steps': 0,
                       'log_every_steps': 1, 'eval_every_steps': 4}.items():
      config[key] = value
    workdir = f'{tmp}/run-{count}'
    result = train.train_and_evaluate(config, workdir)
    rows = (metric_writers.read_jsonl(f'{workdir}/metrics.jsonl')
            if jax.process_index() == 0 else [])
    print(json.dumps({'result': {k: v for k, v in result.items()
                                 if isinstance(v, (int, float))},
                      'losses': [r['train_loss'] for r in rows if 'train_loss' in r]}))
    return
  # Both processes may index the folder: they lock.
  exp = train.setup_experiment(specs.resolve(config))
  ids, num_batches = [], 0
  for batch in exp.inputs.eval_batches(exp.mesh):
    images, mask = parallel.local_rows(batch['image']), parallel.local_rows(batch['mask'])
    ids += image_ids(images)[mask].tolist()
    num_batches += 1
  metrics = train.evaluate(exp.eval_step(), exp.init_state(), exp.inputs.eval_batches(exp.mesh))
  print(json.dumps({'ids': ids, 'num_batches': num_batches, 'metrics': metrics}))


if __name__ == '__main__':
  sys.path.insert(0, HERE)
  _worker(*sys.argv[1:2], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
