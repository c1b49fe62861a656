"""Tests for resnet_jax.summary: counts, XLA FLOPs, the table and the CLI."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from resnet_jax import configlib
from resnet_jax import data
from resnet_jax import models
from resnet_jax import summary
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures('fast_compile')


def test_count_params_is_an_exact_integer():
  tree = {'a': jnp.zeros((3, 4)), 'b': [jax.ShapeDtypeStruct((5,), jnp.float32)]}
  assert summary.count_params(tree) == 17 and isinstance(summary.count_params(tree), int)


def test_macs_count_padding_taps_and_groups():
  x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)
  w = jax.ShapeDtypeStruct((3, 3, 2, 6), jnp.float32)  # 2 groups of 2 -> 3 channels.
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=2)
  assert summary.count_macs(conv, x, w) == 2 * 8 * 8 * 6 * (3 * 3 * 2)
  a = jax.ShapeDtypeStruct((3, 5), jnp.float32)
  b = jax.ShapeDtypeStruct((5, 7), jnp.float32)
  assert summary.count_macs(jax.jit(jnp.dot), a, b) == 3 * 5 * 7  # Inside a jit too.


def test_xla_flops_of_a_matmul():
  a = jax.ShapeDtypeStruct((16, 32), jnp.float32)
  b = jax.ShapeDtypeStruct((32, 8), jnp.float32)
  assert summary.xla_flops(jnp.dot, a, b) == 2 * 16 * 32 * 8


def test_resnet50_at_224_matches_torchvision_size_and_cost():
  config = configlib.load(os.path.join(REPO, 'configs', 'r50.py'))
  model = models.create_model(config.model, num_classes=1000)
  s = summary.summarize(model, (224, 224, 3))
  assert s.total_params == 25_557_032
  # torchvision's table: 4.09 GMACs.
  assert abs(s.total_macs / 1e9 - 4.09) / 4.09 < 0.02
  # XLA skips the taps on zero padding and adds the elementwise work:
  # 8.00 GFLOPs, 2.2% under 2 x 4.09.
  assert abs(s.total_flops / 2e9 - 4.09) / 4.09 < 0.03
  assert [(r.name, r.output_shape) for r in s.rows] == [
      ('stem', (56, 56, 64)), ('stage1', (56, 56, 256)), ('stage2', (28, 28, 512)),
      ('stage3', (14, 14, 1024)), ('stage4', (7, 7, 2048)), ('head', (1000,))]
  assert sum(r.params for r in s.rows) == s.total_params
  assert sum(r.macs for r in s.rows) == s.total_macs
  assert s.rows[0].macs == 112 * 112 * 64 * 7 * 7 * 3  # The 7x7/2 stem conv.
  assert abs(sum(r.flops for r in s.rows) / s.total_flops - 1) < 0.01
  assert summary.forward_flops(model, (224, 224, 3)) == s.total_flops


def test_cifar56_table():
  config = configlib.load(os.path.join(REPO, 'configs', 'cifar10.py') + ':depth=56,shortcut=A')
  model = models.create_model(config.model, num_classes=10)
  s = summary.summarize(model, (32, 32, 3))
  assert [r.name for r in s.rows] == ['stem', 'stage1', 'stage2', 'stage3', 'head']
  assert [r.output_shape for r in s.rows] == [
      (32, 32, 16), (32, 32, 16), (16, 16, 32), (8, 8, 64), (10,)]
  assert s.total_params == 853_018 == sum(r.params for r in s.rows)
  # 3x3 convs: 2n per stage at (32, 16, 8) px with (16, 32, 64) channels; the
  # stride-2 convs see half the input channels.
  conv = lambda hw, cin, cout: hw * hw * 9 * cin * cout
  expected = (conv(32, 3, 16) + 18 * conv(32, 16, 16)
              + conv(16, 16, 32) + 17 * conv(16, 32, 32)
              + conv(8, 32, 64) + 17 * conv(8, 64, 64) + 64 * 10)
  assert s.total_macs == expected == 125_485_696
  assert 0.9 < s.total_flops / (2 * s.total_macs) < 1.0
  text = summary.format_summary(s)
  for needle in ('stage3', '8x8x64', 'trainable parameters: 853,018',
                 'forward MACs per image: 0.125 G', 'forward FLOPs per image:'):
    assert needle in text


def test_input_shape_needs_no_data():
  shape = lambda path, **o: data.input_shape(data.resolve(configlib.load(
      os.path.join(REPO, 'configs', path), o)))
  # imagenet2012 is not prepared here: its known shape answers.
  assert shape('r50.py') == ((224, 224, 3), 1000)
  assert shape('r50.py', image_size=128, num_classes=5) == ((128, 128, 3), 5)
  assert shape('r50.py', num_classes=7) == ((224, 224, 3), 7)
  assert shape('cifar10.py') == ((32, 32, 3), 10)
  with pytest.raises(ConfigError,
                     match='set --config.image_size and --config.num_classes'):
    shape('base.py', dataset='folder:/no/such/dir')


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.summary', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_cli_prints_the_table():
  out = _cli('--config=configs/cifar10.py:depth=20', '--image_size=32', '--num_classes=10')
  assert out.returncode == 0, out.stderr
  assert 'trainable parameters: 269,722' in out.stdout
  assert 'stage3' in out.stdout and 'head' in out.stdout


@pytest.mark.parametrize('args,needle', [
    (['--config=configs/cifar10.py:depth=21'], '6n+2'),
    (['--config=configs/cifar10.py', '--config.model.shortcut=E'], "'none'"),
    (['--config=configs/cifar10.py', '--config.model.depth=abc'], 'depth'),
    (['--config=configs/does_not_exist.py'], 'does_not_exist.py'),
])
def test_cli_bad_config_is_one_line_exit_2(args, needle):
  out = _cli(*args)
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), out.stderr
  assert needle in lines[0] and 'Traceback' not in out.stderr
