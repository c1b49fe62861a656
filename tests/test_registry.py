"""Tests for the `model` config schema and how model.name combines with the fields."""

import os
import subprocess
import sys

import pytest

from resnet_jax import configlib
from resnet_jax import models
from resnet_jax.errors import ConfigError
from resnet_jax.models import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_base_config_model_section_is_the_registry_schema():
  config = configlib.load(os.path.join(REPO, 'configs', 'base.py'))
  assert list(config.model.keys()) == sorted(registry.MODEL_FIELDS)
  for name, field in registry.MODEL_FIELDS.items():
    assert config.model[name] == field.default, name
    assert field.doc, name
  # Shape fields are unset: from the variant, else the family's defaults.
  assert {k for k, f in registry.MODEL_FIELDS.items() if f.default is None} == set(
      registry.VARIANT_FIELDS)
  assert models.resolve_spec(config.model).label == 'cifar-resnet20'


@pytest.mark.parametrize('fields,label,depth', [
    ({'name': 'cifar_resnet56'}, 'cifar_resnet56', 56),
    # An explicit depth overrides the variant, and the name goes with it.
    ({'name': 'cifar_resnet56', 'depth': 20}, 'cifar-resnet20', 20),
    ({'name': 'resnet50', 'depth': 101}, 'imagenet-resnet101', 101),
    ({'name': 'resnet50', 'depth': 50}, 'resnet50', 50),  # Consistent: still named.
    ({'family': 'imagenet'}, 'imagenet-resnet50', 50),
    ({}, 'cifar-resnet20', 20),
])
def test_a_set_field_wins_over_the_variant(fields, label, depth):
  spec = models.resolve_spec(fields)
  assert (spec.label, spec.depth) == (label, depth)


def test_name_and_depth_on_the_command_line():
  """--config.model.name alone builds the variant; an explicit depth overrides it."""
  config = configlib.load(os.path.join(REPO, 'configs', 'base.py'),
                          {'model.name': 'cifar_resnet56'})
  assert models.resolve_spec(config.model).depth == 56
  config.model.depth = 20
  assert models.resolve_spec(config.model).depth == 20
  with pytest.raises(ConfigError, match='unknown model config field'):
    models.resolve_spec({'dept': 20})


def test_an_unset_shape_field_parses_typed_from_the_command_line():
  def summary(*flags):
    return subprocess.run([sys.executable, '-m', 'resnet_jax.summary',
                           '--config=configs/base.py', '--image_size=32',
                           '--num_classes=10', *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  out = summary('--config.model.depth=56')
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'trainable parameters: 853,018' in out.stdout  # CIFAR ResNet-56, option A.
  bad = summary('--config.model.depth=deep')
  assert bad.returncode == 2 and "invalid literal for int() with base 10: 'deep'" in bad.stderr


def test_resnet_rs_and_its_options_from_the_config():
  """The new fields are typed in the base config; a variant sets its shape fields."""
  base = os.path.join(REPO, 'configs', 'base.py')
  config = configlib.load(base, {'model.name': 'resnetrs50', 'model.shortcut': 'D',
                                 'model.drop_path_rate': 0.1, 'model.dropout_rate': 0.25})
  spec = models.resolve_spec(config.model)
  assert (spec.label, spec.stem, spec.stem_pool, spec.se_ratio, spec.shortcut,
          spec.drop_path_rate, spec.dropout_rate) == (
              'resnetrs50', 'deep', 'conv', 0.25, 'D', 0.1, 0.25)
  # Training regularisers are not shape: the variant keeps its name.
  assert 'drop path 0.1, dropout 0.25' in spec.describe()
  # A set shape field overrides the variant (and drops its name).
  config.model.se_ratio = 0.0
  spec = models.resolve_spec(config.model)
  assert (spec.label, spec.se_ratio, spec.stem_pool) == ('imagenet-resnet50', 0.0, 'conv')
  config = configlib.load(base, {'model.name': 'resnet50', 'model.se_ratio': 1 / 16})
  assert models.resolve_spec(config.model).se_ratio == 0.0625
