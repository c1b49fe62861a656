"""CPU rehearsal of benchmarks/run_gpu.sh, the one command of a GPU window.

The real script and CLIs with DRY_RUN=1 (tiny models and steps), on a machine
made to look like the GPU one: TensorFlow cannot be imported, ml_collections
and grain only from the folder `prepare` fills (it travels with the code), and
the CIFAR stage trains on a tiny JPEG archive laid out like the CIFAR-10 copy. Checks that every stage leaves its row, that the table is
written, that the training stage is stopped by SIGTERM with a checkpoint and
that the next call resumes it, and that stages without time are skipped.
"""

import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'run_gpu.sh')

# sys.path's finder, blind to TensorFlow, and to ml_collections, grain and
# what grain needs that the GPU machine lacks outside the deps.
_LIKE_THE_GPU_MACHINE = '''
import importlib.machinery, os, sys

class _LikeTheGpuMachine(importlib.machinery.PathFinder):

  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
      return None
    if name in ('ml_collections', 'grain', 'cloudpickle', 'portpicker', 'array_record'):
      deps = os.path.abspath(os.environ['RUN_GPU_TEST_DEPS'])
      path = [p for p in sys.path if p and os.path.abspath(p).startswith(deps)]
    return super().find_spec(name, path, target)

sys.meta_path[:] = [_LikeTheGpuMachine if f is importlib.machinery.PathFinder else f
                    for f in sys.meta_path]
'''


def tiny_cifar(path):
  """A .tar.gz of split/class/NNNN.jpg, 32x32, 10 classes, like the CIFAR-10 copy."""
  rng = np.random.default_rng(0)
  with tarfile.open(path, 'w:gz') as tar:
    for split, n in (('train', 64), ('test', 32)):
      for k in range(n):
        buf = os.path.join(os.path.dirname(path), 'image.jpg')
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(buf, quality=75)
        tar.add(buf, arcname=f'cifar_tiny/{split}/c{k % 10}/{k:04d}.jpg')


@pytest.fixture(scope='module')
def window(tmp_path_factory, child_env):
  """`run(command, deadline, **env)` -> (rc, stderr, rows of results.jsonl, seconds)."""
  tmp = tmp_path_factory.mktemp('gpu_window')
  (tmp / 'shim').mkdir()
  (tmp / 'shim' / 'sitecustomize.py').write_text(_LIKE_THE_GPU_MACHINE)
  tiny_cifar(str(tmp / 'cifar_tiny.tar.gz'))
  env = dict(child_env(
      PYTHON=sys.executable, DRY_RUN='1', TMPDIR=str(tmp),
      CIFAR=str(tmp / 'cifar_tiny.tar.gz'), DATA_DIR=str(tmp / 'data'),
      DEPS=str(tmp / 'deps'), RUN_GPU_TEST_DEPS=str(tmp / 'deps'), PREPARE_PYTHONS='',
      TRAIN_MAX_S='15', MAX_CANDIDATES='1'), PYTHONPATH=str(tmp / 'shim'))
  out = str(tmp / 'out')

  def run(command, deadline, outdir=out, **extra):
    start = time.time()
    proc = subprocess.run(['bash', SCRIPT, command] + ([outdir] if outdir else []),
                          capture_output=True, text=True,
                          env=dict(env, DEADLINE_S=str(deadline), **extra), timeout=600,
                          check=False)
    results = os.path.join(outdir or '', 'results.jsonl')
    rows = [json.loads(l) for l in open(results)] if outdir and os.path.exists(results) else []
    return proc.returncode, proc.stdout + proc.stderr, rows, time.time() - start

  run.out = out
  run.tmp = tmp
  return run


def test_prepare_bundles_ml_collections_and_grain(window):
  # Here, where they are installed (no shim on the path).
  rc, log, _, _ = window('prepare', 60, outdir=None, PYTHONPATH=ROOT)
  assert rc == 0, log
  deps = window.tmp / 'deps'
  assert os.path.exists(deps / 'common' / 'ml_collections' / 'config_flags' / '__init__.py')
  assert os.path.exists(deps / 'common' / 'yaml' / '__init__.py')
  version = 'py%d%d' % sys.version_info[:2]
  assert os.path.exists(deps / version / 'grain' / '__init__.py')
  assert 'travels: code' in log and 'of 64 MiB' in log


def test_all_then_the_next_window_resumes_training(window):
  if not os.path.isdir(window.tmp / 'deps'):
    window('prepare', 60, outdir=None, PYTHONPATH=ROOT)
  deadline = 240  # A safety net: the stages end well before (TRAIN_MAX_S, MAX_CANDIDATES).
  rc, log, rows, seconds = window('all', deadline)
  assert rc == 0, log[-4000:]
  assert seconds < deadline, log[-4000:]
  by_tag = {r['tag']: r for r in rows}
  assert list(by_tag)[:7] == ['env', 'r50_bf16_b16', 'r50_bf16_b32', 'paper_f32', 'paper_bf16',
                              'pipeline_imagenet_train_resnet_jax_w1', 'train_c20_paper'
                              ], log[-4000:]
  assert by_tag['pipeline_imagenet_train_resnet_jax_w1']['images_per_sec'] > 0
  env = by_tag['env']
  assert env['tensorflow_installed'] is False and env['tensorflow_imported'] is False
  assert env['jax_version'] and env['ml_collections_version'] and env['grain_version']
  assert env['device'] == 'cpu'
  for tag in ('r50_bf16_b16', 'r50_bf16_b32', 'paper_f32', 'paper_bf16'):
    row = by_tag[tag]
    assert 'error' not in row, row
    assert row['images_per_sec'] > 0 and row['compile_s'] > 0 and row['wall_s'] >= 0
    assert row['tensorflow_imported'] is False
  assert (by_tag['r50_bf16_b32']['batch_size'], by_tag['paper_bf16']['dtype']) == (32, 'bfloat16')
  for tag in ('paper_f32', 'paper_bf16'):
    assert by_tag[tag]['estimate_steps'] == 64000
    assert by_tag[tag]['estimated_time_for_steps'] > 0
  # One flag candidate (MAX_CANDIDATES=1): the paper step without command buffers.
  assert by_tag['paper_bf16_no_cmd_buffer']['xla_flags'] == '--xla_gpu_enable_command_buffer='
  train = by_tag['train_c20_paper']
  assert train['rc'] == 75 and train['status'].startswith('stopped'), (train, log[-4000:])
  assert train['start_step'] == 0 and train['end_step'] > 0 and train['num_train_steps'] == 64000
  assert train['step_time_ms'] > 0 and train['estimated_s_to_finish'] > 0
  workdir = os.path.join(window.out, 'c20_paper')
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(train['end_step'])))
  with open(os.path.join(window.out, 'results.md')) as f:
    table = f.read()
  for text in ('Device: cpu', '| r50_bf16_b16 | bfloat16 | 16 |', '| train_c20_paper | stopped',
               '| pipeline_imagenet_train_resnet_jax_w1 |'):
    assert text in table, table
  # The training run indexed the JPEG archive (without TensorFlow).
  arrays = os.listdir(window.tmp / 'data')
  assert any(name.startswith('folder_cifar_tiny_') for name in arrays), arrays

  # Enough seconds for start-up, restore and compile on a loaded 2-core machine, then steps.
  rc, log, rows, _ = window('train', 90, TRAIN_MAX_S='30')
  assert rc == 0, log[-4000:]
  again = rows[-1]
  assert again['tag'] == 'train_c20_paper' and again['rc'] == 75, (again, log[-4000:])
  assert again['start_step'] == train['end_step'] < again['end_step']


def test_stages_without_time_are_skipped(window, tmp_path):
  rc, log, rows, seconds = window('all', 3, outdir=str(tmp_path / 'out'))
  assert rc == 0, log[-4000:]
  skipped = [r['tag'] for r in rows if 'skipped' in r]
  assert skipped == ['r50_bf16_b16', 'paper_f32', 'pipeline', 'train_c20_paper'], rows
  assert all('before the 3 s deadline' in r['skipped'] for r in rows if 'skipped' in r)
  assert seconds < 30
