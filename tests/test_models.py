"""Facts about resnet_jax.models: exact sizes, shortcuts, padding, dtypes, errors.

Parameter counts use jax.eval_shape (nothing is computed); numeric checks use
CIFAR-sized inputs with batch 1-2 so the whole module runs in seconds.
"""

import functools
import os
import subprocess
import sys

import flax
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import configlib
from resnet_jax import models
from resnet_jax.errors import ConfigError
from resnet_jax.models import blocks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures('fast_compile')


def _abstract(model, hw=32, batch=1):
  x = jnp.zeros((batch, hw, hw, 3), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init(model, hw=32, batch=2, seed=0):
  x = jnp.zeros((batch, hw, hw, 3), jnp.float32)
  return jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(seed))


def _paths(tree):
  """'stage1/block1/conv1/kernel'-style paths of a params tree."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
  return ['/'.join(k) for k in flat]


# --- Sizes -------------------------------------------------------------------

# torchvision 0.28 (REFERENCE.md section 3): 1000 classes, shortcut B, v1.5.
TORCHVISION_PARAMS = {
    'resnet18': 11_689_512,
    'resnet34': 21_797_672,
    'resnet50': 25_557_032,
    'resnet101': 44_549_160,
    'resnet152': 60_192_808,
    'resnet200': 64_673_832,
    'wide_resnet50_2': 68_883_240,
    'wide_resnet101_2': 126_886_696,
    'resnext50_32x4d': 25_028_904,
    'resnext101_32x8d': 88_791_336,
}


@pytest.mark.parametrize('name', sorted(TORCHVISION_PARAMS))
def test_imagenet_param_counts_equal_torchvision(name):
  model = models.create_model({'name': name, 'shortcut': 'B'}, num_classes=1000)
  variables = _abstract(model)
  assert _count(variables['params']) == TORCHVISION_PARAMS[name]
  # Running statistics are state, not trainable parameters.
  assert _count(variables['batch_stats']) > 0


@pytest.mark.parametrize('depth,expected', [
    (20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962)])
def test_cifar_option_a_param_counts(depth, expected):
  model = models.create_model({'family': 'cifar', 'depth': depth, 'shortcut': 'A'},
                              num_classes=10)
  params = _abstract(model)['params']
  assert _count(params) == expected
  assert model.spec.stage_sizes == ((depth - 2) // 6,) * 3
  assert model.spec.stage_out_widths == (16, 32, 64)


def test_cifar_depth_is_any_6n_plus_2():
  for n in (1, 2, 5, 200):
    spec = models.resolve_spec({'family': 'cifar', 'depth': 6 * n + 2})
    assert spec.stage_sizes == (n, n, n) and spec.block == 'basic'
  spec = models.resolve_spec({'name': 'cifar_preact_resnet164'})
  assert spec.block == 'bottleneck' and spec.stage_sizes == (18, 18, 18) and spec.preact


def test_every_named_variant_resolves():
  for name, fields in models.VARIANTS.items():
    spec = models.resolve_spec({'name': name})
    assert spec.name == name and spec.depth == fields['depth'], name
    assert spec.family == fields['family'], name


def test_model_defaults_match_configs_base():
  base = configlib.sibling(os.path.join(REPO, 'configs', 'base.py'), 'base')
  assert base.get_model_config().to_dict() == models.MODEL_DEFAULTS


def test_name_supplies_defaults_and_fields_override():
  r50 = configlib.load(os.path.join(REPO, 'configs', 'r50.py'))
  spec = models.resolve_spec(r50.model)
  assert (spec.name, spec.depth, spec.block, spec.shortcut) == ('resnet50', 50, 'bottleneck', 'B')
  # --config.model.depth=18 on the ResNet-50 config is a ResNet-18.
  r50.model.depth = 18
  model = models.create_model(r50.model, num_classes=1000)
  assert _count(_abstract(model)['params']) == TORCHVISION_PARAMS['resnet18']
  # The variant's shape survives base-default fields (family='cifar', depth=20)...
  spec = models.resolve_spec({**models.MODEL_DEFAULTS, 'name': 'wide_resnet50_2'})
  assert (spec.family, spec.depth, spec.width_multiplier) == ('imagenet', 50, 2)
  # ...while the ablation axes (shortcut, norm, stride) always come from the config.
  spec = models.resolve_spec({'name': 'resnet34', 'shortcut': 'A', 'norm': 'group'})
  assert (spec.shortcut, spec.norm) == ('A', 'group')


# --- Shortcuts ----------------------------------------------------------------


def _shortcut_blocks(params):
  return sorted({p.split('/shortcut/')[0] for p in _paths(params) if '/shortcut/' in p})


def test_option_a_has_no_shortcut_params_b_only_where_shape_changes_c_everywhere():
  counts, where = {}, {}
  for kind in 'ABCD':
    model = models.create_model({'depth': 20, 'shortcut': kind}, num_classes=10)
    params = _abstract(model)['params']
    counts[kind] = _count(params)
    where[kind] = _shortcut_blocks(params)
  assert where['A'] == [] and counts['A'] == 269_722
  assert where['B'] == ['stage2/block1', 'stage3/block1']
  assert where['D'] == where['B'] and counts['D'] == counts['B']
  assert len(where['C']) == 9
  assert counts['A'] < counts['B'] < counts['C']


def test_plain_network_has_no_shortcut_and_same_params_as_a():
  model = models.create_model({'depth': 20, 'shortcut': 'none'}, num_classes=10)
  params = _abstract(model)['params']
  assert _shortcut_blocks(params) == [] and _count(params) == 269_722


def _block(kind, shortcut, features, strides, preact=False, zero=False):
  cls = blocks.BasicBlock if kind == 'basic' else blocks.BottleneckBlock
  conv = functools.partial(nn.Conv, use_bias=False)
  norm = functools.partial(nn.BatchNorm, use_running_average=True)
  return cls(features, conv=conv, norm=norm, strides=strides, shortcut=shortcut,
             preact=preact, zero_init_residual=zero)


def _zero_kernels(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v) if path[-1].key == 'kernel' else v, params)


def test_plain_block_has_no_identity_path():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
  for shortcut, expected in (('none', jnp.zeros_like(x)), ('A', nn.relu(x))):
    block = _block('basic', shortcut, 16, 1)
    variables = block.init(jax.random.key(0), x)
    variables = {**variables, 'params': _zero_kernels(variables['params'])}
    np.testing.assert_allclose(block.apply(variables, x), expected, atol=1e-6)


def test_plain_network_output_does_not_depend_on_input_when_branches_are_zero():
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  logits = {}
  for shortcut in ('none', 'A'):
    model = models.create_model({'depth': 8, 'shortcut': shortcut}, num_classes=10)
    variables = _init(model, hw=16)
    params = dict(variables['params'])
    for k in params:
      if k.startswith('stage'):
        params[k] = _zero_kernels(params[k])
    logits[shortcut] = model.apply({**variables, 'params': params}, x, train=False)
  np.testing.assert_allclose(logits['none'][0], logits['none'][1], atol=1e-6)
  assert not np.allclose(logits['A'][0], logits['A'][1], atol=1e-3)


def test_option_a_subsamples_and_zero_pads_channels():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  sc = blocks.Shortcut(32, 2, 'A', conv=nn.Conv, norm=nn.BatchNorm)
  y, variables = sc.init_with_output(jax.random.key(0), x)
  assert variables == {} or not jax.tree.leaves(variables)
  np.testing.assert_array_equal(y[..., :16], x[:, ::2, ::2, :])
  np.testing.assert_array_equal(y[..., 16:], 0.0)


def test_option_d_pools_then_projects():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  conv = functools.partial(nn.Conv, use_bias=False)
  norm = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=1e-5)
  sc = blocks.Shortcut(32, 2, 'D', conv=conv, norm=norm)
  variables = sc.init(jax.random.key(0), x)
  assert set(variables['params']) == {'conv', 'norm'}
  kernel = variables['params']['conv']['kernel']
  assert kernel.shape == (1, 1, 16, 32)
  pooled = x.reshape(2, 4, 2, 4, 2, 16).mean(axis=(2, 4))  # 2x2 average, stride 2.
  expected = jnp.einsum('nhwc,cd->nhwd', pooled, kernel[0, 0]) / np.sqrt(1 + 1e-5)
  np.testing.assert_allclose(sc.apply(variables, x), expected, rtol=1e-5, atol=1e-5)
  # B on the same weights subsamples instead of averaging: a different output.
  b = blocks.Shortcut(32, 2, 'B', conv=conv, norm=norm).apply(variables, x)
  assert not np.allclose(b, expected, atol=1e-3)
  # Odd sizes pool with ceil (as timm): the same size as the stride-2 branch.
  odd = jax.ShapeDtypeStruct((1, 7, 7, 16), jnp.float32)
  assert jax.eval_shape(lambda v, x: sc.apply(v, x), variables, odd).shape == (1, 4, 4, 32)
  # Where only channels change (stride 1), D is a plain 1x1 projection.
  sc1 = blocks.Shortcut(32, 1, 'D', conv=conv, norm=norm)
  np.testing.assert_allclose(
      sc1.apply(variables, x),
      jnp.einsum('nhwc,cd->nhwd', x, kernel[0, 0]) / np.sqrt(1 + 1e-5), rtol=1e-5, atol=1e-5)


# --- Blocks, stems, strides -----------------------------------------------------


def _shapes(model, hw):
  """Output shapes of every submodule (eval_shape, nothing computed)."""
  x = jnp.zeros((1, hw, hw, 3))
  variables = _abstract(model, hw)
  _, state = jax.eval_shape(
      lambda v: model.apply(v, x, train=False, capture_intermediates=True), variables)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state['intermediates']))
  return {'/'.join(k[:-1]): v[0].shape for k, v in flat.items()}


@pytest.mark.parametrize('stride_on,conv1_hw,conv2_hw', [('v1.5', 8, 4), ('v1', 4, 4)])
def test_bottleneck_stride_position(stride_on, conv1_hw, conv2_hw):
  model = models.create_model({'name': 'resnet50', 'shortcut': 'B',
                               'bottleneck_stride': stride_on}, num_classes=10)
  shapes = _shapes(model, 32)  # stage1 runs at 8x8.
  assert shapes['stage2/block1/conv1'][1] == conv1_hw
  assert shapes['stage2/block1/conv2'][1] == conv2_hw
  assert shapes['stage2/block1/conv3'] == (1, 4, 4, 512)


def test_stems_and_stage_shapes():
  shapes = _shapes(models.create_model({'name': 'resnet18'}, num_classes=10), 64)
  assert shapes['stem/conv1'] == (1, 32, 32, 64) and shapes['stem'] == (1, 16, 16, 64)
  assert [shapes[f'stage{i}'] for i in (1, 2, 3, 4)] == [
      (1, 16, 16, 64), (1, 8, 8, 128), (1, 4, 4, 256), (1, 2, 2, 512)]
  assert shapes[''] == (1, 10)
  deep = _shapes(models.create_model({'name': 'resnet50', 'stem': 'deep'}, num_classes=10), 64)
  assert [deep[f'stem/conv{i}'] for i in (1, 2, 3)] == [
      (1, 32, 32, 32), (1, 32, 32, 32), (1, 32, 32, 64)]
  assert deep['stem'] == (1, 16, 16, 64)
  cifar = _shapes(models.create_model({'depth': 20}, num_classes=10), 32)
  assert cifar['stem'] == (1, 32, 32, 16) and 'stage4' not in cifar
  assert cifar['stage3'] == (1, 8, 8, 64)


def test_resnext_and_wide_inner_widths():
  shapes = _shapes(models.create_model({'name': 'resnext50_32x4d'}, num_classes=10), 32)
  assert shapes['stage1/block1/conv2'][-1] == 128 and shapes['stage4'][-1] == 2048
  params = _abstract(models.create_model({'name': 'resnext50_32x4d'}, num_classes=10))
  # Grouped conv: the kernel sees 128 / 32 = 4 input channels per group.
  assert params['params']['stage1']['block1']['conv2']['kernel'].shape == (3, 3, 4, 128)
  wide = _shapes(models.create_model({'name': 'wide_resnet50_2'}, num_classes=10), 32)
  assert wide['stage1/block1/conv2'][-1] == 128 and wide['stage4'][-1] == 2048


def test_preactivation_structure():
  model = models.create_model({'depth': 20, 'preact': True}, num_classes=10)
  params = _abstract(model)['params']
  assert set(params['stem']) == {'conv1'}  # The first block normalises.
  assert set(params['head']) == {'norm', 'fc'}  # Final norm + relu before the head.
  block = _block('basic', 'A', 16, 1, preact=True)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
  variables = block.init(jax.random.key(0), x)
  # With the branch zeroed, a pre-activation block is exactly the identity
  # (negative values survive: no relu after the addition).
  zeroed = {**variables, 'params': _zero_kernels(variables['params'])}
  np.testing.assert_allclose(block.apply(zeroed, x), x, atol=1e-6)
  # The branch is norm -> relu -> conv: conv1 sees relu(norm1(x)).
  _, state = block.apply(variables, x, capture_intermediates=True)
  pre = nn.relu(x / np.sqrt(1 + 1e-5))
  expected = lax.conv_general_dilated(pre, variables['params']['conv1']['kernel'], (1, 1),
                                      ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(state['intermediates']['conv1']['__call__'][0], expected,
                             rtol=1e-5, atol=1e-5)
  bottleneck = models.create_model({'name': 'cifar_preact_resnet164'}, num_classes=10)
  p = _abstract(bottleneck)['params']['stage1']['block1']
  assert {'norm1', 'norm2', 'norm3', 'conv1', 'conv2', 'conv3'} <= set(p)


def test_zero_init_residual_zeroes_the_last_norm_of_each_branch():
  model = models.create_model({'depth': 8, 'zero_init_residual': True}, num_classes=10)
  params = _init(model, batch=1)['params']
  for stage in ('stage1', 'stage2', 'stage3'):
    assert not np.any(params[stage]['block1']['norm2']['scale'])
    assert np.all(params[stage]['block1']['norm1']['scale'] == 1)
  assert np.all(params['stem']['norm1']['scale'] == 1)
  # A bottleneck's last norm is norm3; its shortcut norm stays at one.
  x = jnp.zeros((1, 8, 8, 16))
  for preact in (False, True):
    p = _block('bottleneck', 'B', 8, 2, preact=preact, zero=True).init(
        jax.random.key(0), x)['params']
    assert not np.any(p['norm3']['scale'])
    assert np.all(p['norm2']['scale'] == 1) and np.all(p['shortcut']['norm']['scale'] == 1)
  with pytest.raises(ConfigError, match='batch'):
    models.create_model({'zero_init_residual': True, 'norm': 'none'}, num_classes=10)


# --- torchvision padding ----------------------------------------------------------


def _conv(x, kernel, stride, pad):
  return lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_padding_is_symmetric_like_torchvision():
  model = models.create_model({'name': 'resnet18', 'shortcut': 'B'}, num_classes=10)
  variables = _init(model, batch=1)
  x = jax.random.normal(jax.random.key(3), (1, 32, 32, 3))
  _, state = model.apply(variables, x, train=False, capture_intermediates=True)
  got = lambda *path: functools.reduce(lambda t, k: t[k], path, state['intermediates'])[
      '__call__'][0]
  params = variables['params']
  # 7x7/2 stem conv: 3 pixels each side.
  np.testing.assert_allclose(got('stem', 'conv1'),
                             _conv(x, params['stem']['conv1']['kernel'], 2, 3),
                             rtol=1e-4, atol=1e-4)
  # A stride-2 3x3 conv (stage2's first): (1, 1), not XLA SAME's (0, 1).
  inp = got('stage1')
  kernel = params['stage2']['block1']['conv1']['kernel']
  ours = got('stage2', 'block1', 'conv1')
  np.testing.assert_allclose(ours, _conv(inp, kernel, 2, 1), rtol=1e-4, atol=1e-4)
  same = lax.conv_general_dilated(inp, kernel, (2, 2), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert same.shape == ours.shape and not np.allclose(same, ours, atol=1e-3)


def test_stem_max_pool_pads_one_with_minus_infinity():
  # Identity norm and activation so that negative values reach the pool.
  stem = models.Stem('imagenet', 8, conv=functools.partial(nn.Conv, use_bias=False),
                     norm=blocks.Identity, act=lambda x: x)
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 3))
  variables = stem.init(jax.random.key(0), x)
  conv = _conv(x, variables['params']['conv1']['kernel'], 2, 3)
  expected = lax.reduce_window(conv, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                               ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = stem.apply(variables, x)
  assert out.shape == (1, 4, 4, 8)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  zero_padded = lax.reduce_window(conv, 0.0, lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                  ((0, 0), (1, 1), (1, 1), (0, 0)))
  assert not np.allclose(out, zero_padded)


# --- Norms, init, dtypes, devices -------------------------------------------------


def test_norm_choices():
  conv_bias = lambda p: any(k.endswith('conv1/bias') for k in _paths(p))
  bn = _abstract(models.create_model({'depth': 8}, num_classes=10))
  assert 'batch_stats' in bn and not conv_bias(bn['params'])
  none = _abstract(models.create_model({'depth': 8, 'norm': 'none'}, num_classes=10))
  assert 'batch_stats' not in none and conv_bias(none['params'])
  assert not any('norm' in k for k in _paths(none['params']))
  gn = _abstract(models.create_model({'depth': 8, 'norm': 'group', 'num_groups': 8},
                                     num_classes=10))
  assert 'batch_stats' not in gn and not conv_bias(gn['params'])
  model = models.create_model({'depth': 8, 'bn_momentum': 0.97}, num_classes=10)
  _, norm = model.layers(train=True)
  assert norm.func is nn.BatchNorm
  assert norm.keywords['epsilon'] == 1e-5 and norm.keywords['momentum'] == 0.97
  assert norm.keywords['use_running_average'] is False


def test_he_fan_out_init():
  params = _init(models.create_model({'depth': 8}, num_classes=10), batch=1)['params']
  kernel = params['stage3']['block1']['conv2']['kernel']  # 3x3, 64 -> 64.
  assert abs(float(jnp.std(kernel)) / np.sqrt(2.0 / (9 * 64)) - 1) < 0.05


@pytest.mark.parametrize('dtype', ['bfloat16', jnp.float16])
def test_half_precision_compute_keeps_float32_params(dtype):
  model = models.create_model({'depth': 8}, num_classes=10, dtype=dtype)
  variables = _init(model)
  half = models.canonical_dtype(dtype)
  assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  (logits, state), updates = jax.jit(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats', 'intermediates'],
                               capture_intermediates=True))(variables, x), None
  del updates
  assert logits.shape == (2, 10) and logits.dtype == half
  acts = flax.traverse_util.flatten_dict(flax.core.unfreeze(state['intermediates']))
  assert {v[0].dtype for k, v in acts.items() if k[0].startswith('stage')} == {jnp.dtype(half)}
  assert {v.dtype for v in jax.tree.leaves(state['batch_stats'])} == {jnp.dtype(jnp.float32)}


def test_float32_train_step_updates_batch_stats():
  model = models.create_model({'depth': 8}, num_classes=10)
  variables = _init(model)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  before = variables['batch_stats']['stem']['norm1']['mean']
  assert not np.allclose(updates['batch_stats']['stem']['norm1']['mean'], before)
  # Eval mode is deterministic and needs no mutable collection.
  np.testing.assert_array_equal(model.apply(variables, x, train=False),
                                model.apply(variables, x, train=False))


def test_batch_norm_averages_over_the_mesh_axis():
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  model = models.create_model({'depth': 8}, num_classes=10, axis_name='batch')
  variables = _init(model)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  mesh = jax.make_mesh((jax.device_count(),), ('batch',))
  step = jax.jit(jax.shard_map(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']),
      mesh=mesh, in_specs=(P(), P('batch')), out_specs=(P('batch'), P())))
  n = jax.device_count()
  batch = jax.device_put(jnp.concatenate([x] * n), jax.NamedSharding(mesh, P('batch')))
  logits, _ = step(jax.device_put(variables, jax.NamedSharding(mesh, P())), batch)
  assert logits.shape == (2 * n, 10)
  # Outside a mapped step the axis is unbound: proof that BatchNorm really uses it.
  with pytest.raises(NameError, match='batch'):
    model.apply(variables, x, train=True, mutable=['batch_stats'])


# --- Squeeze-and-excitation, ResNet-RS, stochastic depth, dropout -------------------

# timm 1.0.31 (experiments/pretrained_parity.py): 1000 classes, its own layout
# (shortcut 'B'; 'D' for its avg_down models).
TIMM_PARAMS = {
    'seresnet18': 11_779_624,
    'seresnet34': 21_960_416,
    'seresnet50': 28_088_024,
    'seresnet101': 49_326_872,
    'seresnet152': 66_821_848,
    'seresnext50_32x4d': 27_559_896,
    'seresnext101_32x4d': 48_955_416,
    'seresnext101_32x8d': 93_569_048,
    'seresnext101_64x4d': 88_232_984,
    'resnetrs50': 35_691_912,
    'resnetrs101': 63_618_696,
    'resnetrs152': 86_621_576,
    'resnetrs200': 93_209_992,
    'resnetrs270': 129_861_448,
    'resnetrs350': 163_956_168,
    'resnetrs420': 191_891_656,
}
# timm's resnetrs* `layers` (Bello et al. 2021, Table 7).
RS_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3),
             270: (4, 29, 53, 4), 350: (4, 36, 72, 4), 420: (4, 44, 87, 4)}


@pytest.mark.parametrize('name', sorted(TIMM_PARAMS))
def test_se_and_rs_param_counts_equal_timm(name):
  from resnet_jax.weights import mapping  # pylint: disable=g-import-not-at-top
  config = {'name': name, 'shortcut': 'D' if name.startswith('resnetrs') else 'B'}
  # mapping's trace is cached: test_weights' key tables reuse it.
  shapes = mapping.variable_shapes(config, 1000)
  assert sum(int(np.prod(s)) for p, s in shapes.items() if p[0] == 'params') == (
      TIMM_PARAMS[name])


def test_resnet_rs_stages_stem_and_se_are_timms():
  for depth, stages in RS_STAGES.items():
    spec = models.resolve_spec({'name': f'resnetrs{depth}', 'shortcut': 'D'})
    assert (spec.stage_sizes, spec.block, spec.stem, spec.stem_width, spec.stem_pool,
            spec.se_ratio) == (stages, 'bottleneck', 'deep', 64, 'conv', 0.25)
  model = models.create_model({'name': 'resnetrs50', 'shortcut': 'D'}, num_classes=10)
  shapes = _shapes(model, 64)
  # timm: conv1 = 3x3/2 convs of 32, 32, 64; maxpool = a 3x3/2 conv, bn, relu.
  assert [shapes[f'stem/conv{i}'][-1] for i in (1, 2, 3)] == [32, 32, 64]
  assert shapes['stem/conv3'] == (1, 32, 32, 64)
  assert shapes['stem/pool_conv'] == shapes['stem'] == (1, 16, 16, 64)
  stem = _abstract(model, 64)['params']['stem']
  assert stem['pool_conv']['kernel'].shape == (3, 3, 64, 64) and 'bias' not in stem['pool_conv']
  assert set(stem['pool_norm']) == {'scale', 'bias'}
  se = _abstract(model, 64)['params']['stage4']['block1']['se']
  assert se['fc1']['kernel'].shape == (1, 1, 2048, 512) and se['fc1']['bias'].shape == (512,)
  assert se['fc2']['kernel'].shape == (1, 1, 512, 2048) and se['fc2']['bias'].shape == (2048,)


@pytest.mark.parametrize('channels,ratio,width', [
    # timm's make_divisible(channels * ratio, 8, round_limit=0.), timm 1.0.31.
    (64, 1 / 16, 8), (16, 1 / 16, 8), (100, 1 / 16, 8), (1000, 1 / 16, 64),
    (256, 0.25, 64), (2048, 1 / 16, 128), (48, 0.25, 16), (188, 1 / 16, 8), (200, 0.3, 64)])
def test_se_reduced_width_rounds_as_timm(channels, ratio, width):
  assert blocks.make_divisible(channels * ratio) == width
  se = blocks.SqueezeExcite(ratio, functools.partial(nn.Conv, use_bias=False))
  shapes = jax.eval_shape(se.init, jax.random.key(0), jnp.zeros((1, 2, 2, channels)))
  assert shapes['params']['fc1']['kernel'].shape == (1, 1, channels, width)


def test_squeeze_excite_computes_timms_function():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 32))
  se = blocks.SqueezeExcite(0.25, nn.Conv)
  variables = se.init(jax.random.key(1), x)
  p = jax.tree.map(np.asarray, variables['params'])
  p['fc1']['bias'] = np.linspace(-1, 1, 8, dtype=np.float32)  # Biases used, not zero.
  p['fc2']['bias'] = np.linspace(-2, 2, 32, dtype=np.float32)
  squeezed = np.asarray(x).mean(axis=(1, 2))
  hidden = np.maximum(squeezed @ p['fc1']['kernel'][0, 0] + p['fc1']['bias'], 0)
  gate = 1 / (1 + np.exp(-(hidden @ p['fc2']['kernel'][0, 0] + p['fc2']['bias'])))
  np.testing.assert_allclose(se.apply({'params': p}, x), np.asarray(x) * gate[:, None, None],
                             rtol=1e-5, atol=1e-6)


def test_se_gates_the_residual_branch_before_the_addition():
  """Gate 1/2 (fc2 zero, bias 0): a pre-activation block is x + branch / 2."""
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
  conv = functools.partial(nn.Conv, use_bias=False)
  norm = functools.partial(nn.BatchNorm, use_running_average=True)
  make = lambda shortcut, se: blocks.BasicBlock(
      16, conv=conv, norm=norm, shortcut=shortcut, preact=True,
      se=functools.partial(blocks.SqueezeExcite, 1 / 16, conv) if se else None)
  variables = make('A', True).init(jax.random.key(0), x)
  params = dict(variables['params'])
  params['se'] = {'fc1': params['se']['fc1'],
                  'fc2': jax.tree.map(jnp.zeros_like, params['se']['fc2'])}
  gated = make('A', True).apply({**variables, 'params': params}, x)
  plain = {**variables, 'params': {k: v for k, v in params.items() if k != 'se'}}
  branch = make('none', False).apply(plain, x)  # Pre-activation: no act at the end.
  np.testing.assert_allclose(gated, x + branch / 2, rtol=1e-5, atol=1e-5)


def test_new_options_off_are_todays_model():
  """se_ratio 0, stem_pool 'max', both rates 0 (the defaults) build today's modules.

  Today's parameters are pinned by the counts above and the recorded PyTorch key
  tables (test_weights); equal specs give equal modules, hence equal functions.
  """
  base = {'family': 'imagenet', 'depth': 18, 'shortcut': 'B'}
  explicit = {**base, 'se_ratio': 0.0, 'stem_pool': 'max', 'drop_path_rate': 0.0,
              'dropout_rate': 0.0}
  assert models.create_model(base, num_classes=10) == models.create_model(
      explicit, num_classes=10)
  paths = _paths(_abstract(models.create_model(base, num_classes=10)))
  assert not [p for p in paths if '/se/' in p or 'pool_' in p]


# timm 1.0.31: create_model('resnet18', drop_path_rate=0.1), each block's drop_prob.
TIMM_RESNET18_DROP_PATH = [0.0, 0.014285714285714287, 0.028571428571428574,
                           0.042857142857142864, 0.05714285714285715, 0.07142857142857142,
                           0.08571428571428573, 0.1]


def test_drop_path_rates_rise_linearly_over_the_blocks_as_timm():
  spec = models.resolve_spec({'name': 'resnet18', 'drop_path_rate': 0.1})
  assert [r for stage in spec.drop_path_rates() for r in stage] == TIMM_RESNET18_DROP_PATH
  spec = models.resolve_spec({'depth': 20, 'drop_path_rate': 0.2})  # 3 stages of 3.
  assert [len(stage) for stage in spec.drop_path_rates()] == [3, 3, 3]
  assert [r for stage in spec.drop_path_rates() for r in stage] == pytest.approx(
      [0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2])
  # The first block (rate 0) has no drop path, as timm's; every other block has one.
  shapes = _shapes(models.create_model({'depth': 20, 'drop_path_rate': 0.2},
                                       num_classes=10), 32)
  with_drop_path = sorted(k[:-len('/drop_path')] for k in shapes if k.endswith('/drop_path'))
  assert with_drop_path == sorted(f'stage{s}/block{b}' for s in (1, 2, 3)
                                  for b in (1, 2, 3) if (s, b) != (1, 1))


def test_drop_path_masks_whole_examples_and_keeps_the_expected_value():
  n, rate = 4096, 0.25
  x = jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.float32)[:, None, None, None],
                       (n, 2, 2, 3))
  drop = blocks.DropPath(rate, deterministic=False)
  y = np.asarray(drop.apply({}, x, rngs={'dropout': jax.random.key(0)}))
  kept = y[:, 0, 0, 0] != 0
  # Per example: all of it kept (scaled by 1 / keep) or all of it zero.
  np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / (1 - rate), rtol=1e-6)
  assert not y[~kept].any()
  # Bernoulli(keep) per example: 4096 draws, 0.75 +- 0.007 (one standard deviation).
  assert abs(kept.mean() - (1 - rate)) < 0.03
  ones = np.asarray(drop.apply({}, jnp.ones((n, 1, 1, 1)), rngs={'dropout': jax.random.key(1)}))
  assert abs(ones.mean() - 1.0) < 0.04  # The expected value is preserved.
  other = np.asarray(drop.apply({}, x, rngs={'dropout': jax.random.key(2)}))
  assert not np.array_equal(other != 0, y != 0)  # Masks come from the rng.
  # Evaluation (and rate 0) is the identity, exactly.
  np.testing.assert_array_equal(blocks.DropPath(rate).apply({}, x), x)
  np.testing.assert_array_equal(
      blocks.DropPath(0.0, deterministic=False).apply({}, x), x)


def test_drop_path_in_a_block_leaves_the_shortcut_alone():
  """A dropped example's block is its shortcut; a kept one's branch is scaled by 1 / keep."""
  x = jax.random.normal(jax.random.key(1), (64, 4, 4, 8))
  conv = functools.partial(nn.Conv, use_bias=False)
  norm = functools.partial(nn.BatchNorm, use_running_average=True)
  drop = functools.partial(blocks.DropPath, 0.5, deterministic=False)
  make = lambda shortcut, d: blocks.BasicBlock(8, conv=conv, norm=norm, shortcut=shortcut,
                                               preact=True, drop_path=d)
  variables = make('A', drop).init(jax.random.key(0), x)
  y = make('A', drop).apply(variables, x, rngs={'dropout': jax.random.key(3)})
  branch = make('none', None).apply(variables, x)
  dropped = np.all(np.isclose(y, x, atol=1e-6), axis=(1, 2, 3))
  kept = np.all(np.isclose(y, x + 2 * branch, rtol=1e-5, atol=1e-5), axis=(1, 2, 3))
  assert np.all(dropped ^ kept) and 10 < dropped.sum() < 54


def test_head_dropout_on_the_pooled_features():
  head = models.Head(16, blocks.Identity,
                     dropout=functools.partial(nn.Dropout, 0.5, deterministic=False))
  x = jnp.ones((256, 1, 1, 16))
  identity = {'params': {'fc': {'kernel': jnp.eye(16), 'bias': jnp.zeros(16)}}}
  y = np.asarray(head.apply(identity, x, rngs={'dropout': jax.random.key(2)}))
  assert set(np.unique(y)) == {0.0, 2.0}  # Each feature dropped or scaled by 1 / keep.
  assert abs((y == 0).mean() - 0.5) < 0.03


def test_stochastic_model_is_deterministic_in_evaluation():
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  base = {'depth': 8, 'base_width': 4, 'shortcut': 'B'}
  plain = models.create_model(base, num_classes=10)
  model = models.create_model({**base, 'drop_path_rate': 0.3, 'dropout_rate': 0.5},
                              num_classes=10)
  variables = _init(model, hw=8)
  assert _paths(variables) == _paths(_abstract(plain, 8))  # No new parameters.
  # Evaluation: today's function, bit for bit, and no rng needed.
  evaluate = lambda m: jax.jit(lambda v, x: m.apply(v, x, train=False))(variables, x)
  np.testing.assert_array_equal(evaluate(model), evaluate(plain))
  train = jax.jit(lambda v, x, k: model.apply(v, x, train=True, mutable=['batch_stats'],
                                                 rngs={'dropout': k})[0])
  with pytest.raises(flax.errors.InvalidRngError, match='dropout'):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']),
                   variables, x)
  first = train(variables, x, jax.random.key(5))
  np.testing.assert_array_equal(first, train(variables, x, jax.random.key(5)))
  assert not np.allclose(first, train(variables, x, jax.random.key(6)), atol=1e-4)


def test_se_and_conv_stem_pool_in_half_precision():
  model = models.create_model({'name': 'resnetrs50', 'shortcut': 'D', 'base_width': 8},
                              num_classes=10, dtype='bfloat16')
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.dtype == jnp.bfloat16


# --- Errors and imports -------------------------------------------------------------


@pytest.mark.parametrize('fields,needles', [
    ({'family': 'cifar', 'depth': 21}, ['6n+2', '20, 32, 44, 56, 110']),
    ({'family': 'imagenet', 'depth': 42}, ['18, 34, 50, 101, 152, 200']),
    ({'shortcut': 'E'}, ["'A', 'B', 'C', 'D', 'none'"]),
    ({'norm': 'layer'}, ["'batch', 'group', 'none'"]),
    ({'stem': 'big'}, ["'auto', 'imagenet', 'deep', 'cifar'"]),
    ({'block': 'wide'}, ["'auto', 'basic', 'bottleneck'"]),
    ({'bottleneck_stride': 'v2'}, ["'v1.5', 'v1'"]),
    ({'family': 'mnist'}, ["'imagenet', 'cifar'"]),
    ({'name': 'resnet51'}, ['resnet50', 'cifar_resnet56']),
    ({'depht': 20}, ['depth']),
    ({'family': 'imagenet', 'depth': 50, 'block': 'basic'}, ['bottleneck']),
    ({'depth': 20, 'groups': 32}, ['bottleneck']),
    ({'depth': 20, 'norm': 'group'}, ['valid num_groups here: [1, 2, 4, 8, 16]']),
    ({'se_ratio': 16}, ['se_ratio=16', '[0, 1]']),
    ({'drop_path_rate': 1.0}, ['drop_path_rate=1.0', '[0, 1)']),
    ({'dropout_rate': -0.1}, ['dropout_rate=-0.1', '[0, 1)']),
    ({'drop_path_rate': 0.1, 'shortcut': 'none'}, ["'A', 'B', 'C', 'D'"]),
    ({'stem_pool': 'avg'}, ["'max', 'conv'"]),
    ({'stem_pool': 'conv'}, ["'imagenet', 'deep'"]),  # The cifar stem has no pool.
])
def test_unsupported_configs_raise_config_error_naming_valid_choices(fields, needles):
  with pytest.raises(ConfigError) as info:
    models.create_model(fields, num_classes=10)
  for needle in needles:
    assert needle in str(info.value)


def test_dtype_and_num_classes_are_checked():
  assert models.create_model({}, num_classes=10, dtype='bfloat16').dtype == jnp.bfloat16
  with pytest.raises(ConfigError, match='float32, bfloat16, float16'):
    models.create_model({}, num_classes=10, dtype='int8')
  with pytest.raises(ConfigError, match='num_classes'):
    models.create_model({}, num_classes=0)


def test_models_do_not_import_tensorflow():
  code = ('import sys, resnet_jax.models as m; m.create_model({}, num_classes=10); '
          'sys.exit(any(k.split(".")[0] == "tensorflow" for k in sys.modules))')
  assert subprocess.run([sys.executable, '-c', code], cwd=REPO).returncode == 0
