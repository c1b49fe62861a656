"""Tests for intermediate features (`model.apply(..., features=...)`, models.feature_info).

No PyTorch: timm's feature values and feature_info, and what the default
forward pass computed before `features=` existed, were recorded by
experiments/features_parity.py into tests/fixtures/features/.
"""

import hashlib
import importlib.util
import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models
from resnet_jax import weights
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'features')


def _experiment():
  """experiments/features_parity.py (its seeded weights and subsample; no torch import)."""
  spec = importlib.util.spec_from_file_location(
      'features_parity', os.path.join(REPO, 'experiments', 'features_parity.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


EXPERIMENT = _experiment()
with open(os.path.join(FIXTURES, 'default_forward.json'), encoding='utf-8') as _f:
  FORWARD = json.load(_f)
with open(os.path.join(FIXTURES, 'timm.json'), encoding='utf-8') as _f:
  TIMM = json.load(_f)
CIFAR = {'family': 'cifar', 'depth': 8, 'shortcut': 'A'}


def _digest(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()


# --- The default forward pass is what it was ----------------------------------------


@pytest.mark.parametrize('label', list(FORWARD['archs']))
def test_default_pass_is_the_same_program_with_the_same_variables(label):
  record = FORWARD['archs'][label]
  model = models.create_model(record['config'], num_classes=EXPERIMENT.CLASSES)
  size = record['size']
  images = jax.ShapeDtypeStruct((EXPERIMENT.BATCH, size, size, 3), jnp.float32)
  # Shapes only: the program and the variable tree do not depend on the values.
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                             images)
  tree = EXPERIMENT.variable_tree(variables)
  assert len(tree.splitlines()) == record['num_variables']
  assert _digest(tree) == record['variables_sha256']
  # The same jaxpr is the same computation: bit-identical logits on any machine.
  evaluate = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
  train = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, images)
  assert _digest(str(evaluate)) == record['eval_jaxpr_sha256']
  assert _digest(str(train)) == record['train_jaxpr_sha256']


@pytest.mark.parametrize('label', ['cifar8_A', 'cifar8_preact_B', 'resnet18_B', 'resnet50d'])
def test_default_logits_are_bit_identical_to_those_before_features(label):
  record = FORWARD['archs'][label]
  model, variables, images = EXPERIMENT.forward_inputs(record['config'], record['size'])
  got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
  before = np.frombuffer(bytes.fromhex(record['logits_hex']), np.float32).reshape(got.shape)
  np.testing.assert_array_equal(got, before)


def test_the_logits_output_equals_the_default_pass():
  model = models.create_model(CIFAR, num_classes=10)
  variables = EXPERIMENT.seeded_variables(model, 16)
  images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(np.float32)
  run = lambda **kw: jax.jit(lambda v, x: model.apply(v, x, train=False, **kw))(
      variables, images)
  default = np.asarray(run())
  # Alone, the same program: the same bits.
  np.testing.assert_array_equal(np.asarray(run(features='logits')['logits']), default)
  # Beside other outputs XLA may fuse otherwise: float rounding.
  both = run(features=('stage3', 'logits'))
  np.testing.assert_allclose(np.asarray(both['logits']), default, rtol=0,
                             atol=1e-5 * np.abs(default).max())


# --- feature_info: every architecture -----------------------------------------------


def _smallest(name: str) -> dict:
  """The variant with the fewest blocks of its kind: the same stem, widths and stages."""
  spec = models.resolve_spec({'name': name, 'shortcut': 'B'})
  if spec.family == 'imagenet':
    return {'name': name, 'shortcut': 'B', 'depth': 18 if spec.block == 'basic' else 50}
  return {'name': name, 'shortcut': 'B', 'depth': 8 if spec.block == 'basic' else 11}


@pytest.mark.parametrize('name', sorted(models.VARIANTS))
def test_feature_info_describes_the_maps_of_every_variant(name):
  # feature_info depends on the stem and the widths, not on the number of
  # blocks: the shallowest twin has the same maps and traces quickly.
  full = models.feature_info(models.resolve_spec({'name': name, 'shortcut': 'B'}))
  small = models.create_model(_smallest(name), num_classes=7)
  assert models.feature_info(small.spec) == full
  side = 64
  shapes = jax.eval_shape(
      lambda x: small.init_with_output(jax.random.PRNGKey(0), x, train=False,
                                       features=True)[0],
      jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32))
  assert list(shapes) == sorted(f.name for f in full)
  for info in full:
    assert shapes[info.name].shape == (2, side // info.reduction, side // info.reduction,
                                       info.channels), info
  assert [f.index for f in full] == list(range(len(full)))
  assert full[0].name == 'stem' and [f.name for f in full[1:]] == [
      f'stage{i + 1}' for i in range(len(full) - 1)]


def test_feature_info_equals_timms_for_every_recorded_architecture():
  assert set(TIMM['feature_info']) == set(weights.ARCHS['timm'])
  for arch, theirs in TIMM['feature_info'].items():
    spec = models.resolve_spec(weights.model_config(arch, 'timm'))
    assert [f.as_timm() for f in models.feature_info(spec)] == theirs, arch


# --- Values against timm's features_only ----------------------------------------------


@pytest.fixture(scope='module')
def timm_samples():
  with np.load(os.path.join(FIXTURES, 'timm.npz')) as data:
    return dict(data)


@pytest.mark.parametrize('arch', EXPERIMENT.FIXTURE_ARCHS)
def test_features_equal_timms_features_only(arch, timm_samples):
  from resnet_jax.weights import synthetic  # pylint: disable=g-import-not-at-top
  table = weights.key_table(arch, 'timm', num_classes=TIMM['classes'])
  model, variables = weights.from_state_dict(
      synthetic.random_state_dict(table, TIMM['seed']), arch, 'timm')
  images = synthetic.random_images(TIMM['batch'], TIMM['size'], seed=TIMM['seed'])
  maps = jax.jit(lambda v, x: model.apply(v, x, train=False, features=True))(
      variables, images)
  for info in models.feature_info(model.spec):
    flat = np.asarray(maps[info.name]).reshape(-1)
    ours = flat[EXPERIMENT.sample_indices(flat.size, TIMM['samples'])]
    theirs = timm_samples[f'{arch}/{info.name}']
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= TIMM['tolerance'] * scale, (arch, info.name)


# --- Selection -------------------------------------------------------------------------


@pytest.fixture(scope='module')
def cifar():
  model = models.create_model(CIFAR, num_classes=10)
  return model, EXPERIMENT.seeded_variables(model, 16)


def test_selection_returns_what_was_named_in_network_order(cifar):
  model, variables = cifar
  x = np.ones((2, 16, 16, 3), np.float32)
  out = model.apply(variables, x, train=False, features=('logits', 'stage2', 'stem'))
  assert list(out) == ['stem', 'stage2', 'logits']
  assert out['stage2'].shape == (2, 8, 8, 32) and out['logits'].shape == (2, 10)
  everything = model.apply(variables, x, train=False, features=True)
  assert list(everything) == list(models.feature_names(model.spec)) == [
      'stem', 'stage1', 'stage2', 'stage3']
  one = model.apply(variables, x, train=False, features='stage1')
  np.testing.assert_array_equal(one['stage1'], everything['stage1'])
  head = model.apply(variables, x, train=False, features=('stage3', 'pooled'))
  np.testing.assert_allclose(head['pooled'], jnp.mean(head['stage3'], axis=(1, 2)),
                             rtol=1e-6)


@pytest.mark.parametrize('bad', [('stage4',), ('stem', 'head'), (), False, 3])
def test_an_unknown_selection_names_the_valid_ones(cifar, bad):
  model, variables = cifar
  with pytest.raises(ConfigError, match='valid for cifar-resnet8: stem, stage1, stage2, '
                     'stage3, pooled, logits'):
    model.apply(variables, np.ones((1, 16, 16, 3), np.float32), train=False, features=bad)


def test_a_backbone_has_no_classifier_and_early_taps_no_later_stages():
  model = models.create_model(CIFAR, num_classes=10)
  x = jnp.ones((1, 16, 16, 3))
  params = lambda **kw: set(jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), x, train=False, **kw))['params'])
  assert params() == {'stem', 'stage1', 'stage2', 'stage3', 'head'}
  assert params(features=True) == params(features='pooled') == {
      'stem', 'stage1', 'stage2', 'stage3'}
  assert params(features='stage1') == {'stem', 'stage1'}
  preact = models.create_model({**CIFAR, 'preact': True}, num_classes=10)
  tree = jax.eval_shape(lambda: preact.init(jax.random.PRNGKey(0), x, train=False,
                                            features='pooled'))['params']
  assert set(tree['head']) == {'norm'}  # The final norm, no classifier.


def test_the_stem_tap_is_before_the_pool_and_features_train_with_batch_stats():
  model = models.create_model({'name': 'resnet18', 'shortcut': 'B'}, num_classes=5)
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  variables = EXPERIMENT.seeded_variables(model, 32)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False, features=('stem', 'stage1')))(
      variables, x)
  assert out['stem'].shape == (2, 16, 16, 64) and out['stage1'].shape == (2, 8, 8, 64)
  assert float(out['stem'].min()) >= 0.0  # After the ReLU, before the max-pool.
  got, updates = jax.jit(lambda v, x: model.apply(
      v, x, train=True, features=('stage2',), mutable=['batch_stats']))(variables, x)
  assert set(got) == {'stage2'}
  changed = {k for k in updates['batch_stats']
             if not jax.tree.all(jax.tree.map(np.array_equal, updates['batch_stats'][k],
                                              variables['batch_stats'][k]))}
  assert changed == {'stem', 'stage1', 'stage2'}, changed
  flat = flax.traverse_util.flatten_dict(updates['batch_stats'])
  assert all(k[0] in ('stem', 'stage1', 'stage2', 'stage3', 'stage4') for k in flat)
