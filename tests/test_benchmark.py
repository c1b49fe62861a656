"""Tests for resnet_jax.benchmark: the CLI's JSON line, FLOPs, MFU and no TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from resnet_jax import benchmark
from resnet_jax import configlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config=configs/fake_data.py:model=cifar20', '--config.model.depth=8',
        '--config.image_size=16', '--batch_size=16', '--steps=3', '--warmup=1']
TINY_OVERRIDES = {'model.depth': 8, 'image_size': 16, 'batch_size': 16}
PEAK_TFLOPS = 0.05
KEYS = ('images_per_sec', 'step_time_ms', 'compile_s', 'mfu', 'device', 'batch_size',
        'dtype', 'model', 'image_size', 'flops_per_step', 'num_devices', 'jax_version',
        'steps', 'estimated_time_for_steps', 'tensorflow_imported')

# Runs the CLI as `python -m resnet_jax.benchmark` would, in a process where
# TensorFlow cannot be imported at all: the GPU machine has none, so an import
# anywhere on the path (even one that would succeed here) must fail this test.
_NO_TF_RUNNER = textwrap.dedent('''
    import importlib.abc, runpy, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
          raise ImportError(f'{name} is blocked: the GPU machine has no TensorFlow')
        return None

    sys.meta_path.insert(0, NoTensorFlow())
    sys.argv = ['resnet_jax.benchmark'] + sys.argv[1:]
    try:
      runpy.run_module('resnet_jax.benchmark', run_name='__main__', alter_sys=True)
    finally:
      assert 'tensorflow' not in sys.modules, 'tensorflow was imported'
''')


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
  """One CLI run on the tiny config (shared by the tests that read its output)."""
  output = tmp_path_factory.mktemp('bench') / 'results.jsonl'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)  # One CPU device, whatever the caller's flags.
  proc = subprocess.run(
      [sys.executable, '-c', _NO_TF_RUNNER, *TINY, f'--peak_tflops={PEAK_TFLOPS}',
       '--estimate_steps=1000', f'--output={output}'],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc, output


def test_cli_prints_one_json_line_with_all_keys(cli_run):
  proc, output = cli_run
  lines = [l for l in proc.stdout.splitlines() if l.strip()]
  assert len(lines) == 1, proc.stdout
  result = json.loads(lines[0])
  assert set(KEYS) <= set(result), sorted(set(KEYS) - set(result))
  assert result['model'] == 'cifar-resnet8'
  assert (result['batch_size'], result['image_size'], result['num_devices']) == (16, 16, 1)
  assert result['dtype'] == 'float32' and result['steps'] == 3
  assert result['tensorflow_imported'] is False
  # compile_s is the only compile: nothing compiled again inside the timed loop.
  assert result['recompiles'] == 0
  with open(output, encoding='utf-8') as f:
    assert f.read().splitlines() == lines


def test_cli_values_are_consistent(cli_run):
  result = json.loads(cli_run[0].stdout.strip().splitlines()[-1])
  assert result['images_per_sec'] > 0 and result['step_time_ms'] > 0
  assert result['compile_s'] > 0 and result['flops_per_step'] > 0
  assert result['images_per_sec'] == pytest.approx(
      result['batch_size'] * 1000 / result['step_time_ms'], rel=1e-4)
  assert result['estimated_time_for_steps'] == pytest.approx(
      1000 * result['step_time_ms'] / 1000, rel=1e-4)
  # A given peak gives mfu = FLOPs / step time / peak.
  assert result['peak_tflops'] == PEAK_TFLOPS
  assert result['mfu'] == pytest.approx(
      result['flops_per_step'] / (result['step_time_ms'] / 1000) / (PEAK_TFLOPS * 1e12),
      rel=1e-4)


def test_step_flops_are_about_three_forward_passes(cli_run):
  """Forward + backward + update: about 3x the forward FLOPs of the batch."""
  from resnet_jax import models  # pylint: disable=g-import-not-at-top
  from resnet_jax import summary  # pylint: disable=g-import-not-at-top
  result = json.loads(cli_run[0].stdout.strip().splitlines()[-1])
  config = configlib.load(os.path.join(REPO, 'configs/fake_data.py:model=cifar20'),
                          TINY_OVERRIDES)
  model = models.create_model(config.model, num_classes=10)
  forward = summary.forward_flops(model, (16, 16, 3)) * result['batch_size']
  assert 2.0 < result['flops_per_step'] / forward < 5.0, (result['flops_per_step'], forward)


def test_run_benchmark_with_host_input_and_no_donation():
  """The speed-experiment paths: per-step uint8 transfers, prefetch, no donation.

  On a CPU the peak is unknown, so the MFU is None.
  """
  config = configlib.load(os.path.join(REPO, 'configs/fake_data.py:model=cifar20'),
                          TINY_OVERRIDES)
  result = benchmark.run_benchmark(config, steps=2, warmup=1, donate=False,
                                   host_input='uint8', prefetch=2)
  assert result['images_per_sec'] > 0 and result['flops_per_step'] > 0
  assert (result['donate'], result['host_input'], result['prefetch']) == (False, 'uint8', 2)
  assert result['recompiles'] == 0 and result['h2d_ms_per_batch'] > 0
  if result['platform'] == 'cpu':
    assert result['mfu'] is None and result['peak_tflops'] is None
  assert 'estimated_time_for_steps' not in result


def test_count_compiles_sees_a_compile():
  """The recompile counter is live (a jax rename of its event would silence it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jnp.arange(7.0)
  f = jax.jit(lambda x: x * 3 + 1)
  with benchmark.count_compiles() as compiles:
    f(x).block_until_ready()
    f(x).block_until_ready()  # Cached: not compiled again.
  assert len(compiles) == 1


@pytest.mark.parametrize('kind,dtype,peak', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989.4),
    ('NVIDIA H100 80GB HBM3', 'float32', 494.7),
    ('NVIDIA H100 PCIe', 'bfloat16', 756.0),
    ('NVIDIA H100 NVL', 'float16', 835.5),
    ('NVIDIA H200', 'bfloat16', 989.4),
    ('NVIDIA GH200 480GB', 'bfloat16', 989.4),
    ('NVIDIA A100-SXM4-80GB', 'float32', 156.0),
    ('Tesla V100-SXM2-16GB', 'float32', 15.7),
    ('Tesla V100-PCIE-32GB', 'bfloat16', 112.0),
    ('TPU v4', 'bfloat16', 275.0),
    ('TPU v5 lite', 'bfloat16', 197.0),
    ('TPU v5', 'bfloat16', 459.0),
    ('TPU v5p', 'float32', 459.0),
    ('TPU v6 lite', 'bfloat16', 918.0),
    ('cpu', 'float32', None),
])
def test_peak_table(kind, dtype, peak):
  assert benchmark.peak_tflops_for(kind, dtype) == peak


def test_mfu_formula_and_unknown_peak():
  assert benchmark.model_flop_utilization(2e12, 0.5, 8.0, 1) == pytest.approx(0.5)
  assert benchmark.model_flop_utilization(2e12, 0.5, 8.0, 2) == pytest.approx(0.25)
  assert benchmark.model_flop_utilization(2e12, 0.5, None, 1) is None


def test_bad_settings_exit_2_with_one_line():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.benchmark', *TINY, '--steps=0'],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'error: --steps=0' in proc.stderr and 'Traceback' not in proc.stderr


def test_a_dataset_config_runs_on_synthetic_data_without_the_data(tmp_path):
  """cifar10 is not prepared here: the benchmark needs only its shape."""
  config = configlib.load(os.path.join(REPO, 'configs/cifar10.py'), {
      'model.depth': 8, 'batch_size': 16, 'data_dir': str(tmp_path / 'empty'),
      'download': False})
  result = benchmark.run_benchmark(config, steps=1, warmup=1)
  assert (result['image_size'], result['batch_size']) == (32, 16)
  assert result['images_per_sec'] > 0 and result['recompiles'] == 0
  assert not os.listdir(tmp_path) or not os.listdir(tmp_path / 'empty')
