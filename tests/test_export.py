"""Tests for `python -m resnet_jax.export` (resnet_jax.export): jax.export artifacts."""

import json
import os
import subprocess
import sys
import textwrap

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import configlib
from resnet_jax import export
from resnet_jax import models
from resnet_jax import workdir
from resnet_jax.data import spec as data_spec
from resnet_jax.errors import ConfigError
from resnet_jax.weights import files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
NAMES = ('cat', 'dog', 'horse')
# What a jax-only machine has: jax and what it imports (flatbuffers for
# deserialize), nothing of flax, orbax or this package.
JAX_ONLY = ('jax', 'jaxlib', 'ml_dtypes', 'numpy', 'numpy.libs', 'opt_einsum', 'scipy',
            'scipy.libs', 'flatbuffers')
pytestmark = pytest.mark.usefixtures('compile_cache')


def write_run(directory: str, **overrides) -> tuple[models.ResNet, dict]:
  """A workdir as a training run leaves it: checkpoint, config.json, dataset.json.

  CIFAR ResNet-8 at 16x16, 3 classes, seeded weights with random BatchNorm
  statistics (so that they matter); returns (model, variables).
  """
  values = {'model.depth': 8, 'image_size': 16, 'num_classes': 3, 'augment': 'cifar',
            'mean': MEAN, 'std': STD, **overrides}
  config = configlib.load(os.path.join(REPO, 'configs/fake_data.py:model=cifar20'), values)
  model = models.create_model(config.model, num_classes=3)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False))
  rng = np.random.default_rng(0)

  def value(path, leaf):
    if path[-1].key == 'kernel':
      return rng.normal(0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape)
    if path[-1].key in ('scale', 'var'):
      return rng.uniform(0.5, 2.0, leaf.shape)
    return rng.normal(0, 0.2, leaf.shape)  # Biases, running means.

  variables = jax.tree_util.tree_map_with_path(
      lambda p, leaf: value(p, leaf).astype(np.float32), flax.core.unfreeze(shapes))
  meta = data_spec.DatasetMeta(
      name='folder:/data/pets', num_classes=3, image_shape=(16, 16, 3), num_train=30,
      num_eval=9, train_split='train', eval_split='test', mean=MEAN, std=STD,
      class_names=NAMES)
  files.write_workdir(directory, config, variables, {'source': 'test'}, meta)
  return model, variables


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('export') / 'run')
  model, variables = write_run(directory)
  return directory, model, variables


def checkpoint_logits(model, variables, images_uint8):
  """What evaluation computes: the in-step normalisation, then the model."""
  from resnet_jax.data import placement  # pylint: disable=g-import-not-at-top
  x = placement.preprocess(images_uint8, mean=MEAN, std=STD)
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))


def assert_close(got, expected):
  """Equal to float rounding: max |difference| within 1e-5 of the largest |value|."""
  got, expected = np.asarray(got), np.asarray(expected)
  assert got.shape == expected.shape
  assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def images(n: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def run_export(env, *args):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.export', *args], env=env,
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def jax_only_path(tmp_path) -> str:
  """A directory holding jax and its imports only (links into this environment)."""
  site = os.path.dirname(os.path.dirname(jax.__file__))
  directory = tmp_path / 'jax_only'
  directory.mkdir()
  for name in JAX_ONLY:
    if os.path.exists(os.path.join(site, name)):
      os.symlink(os.path.join(site, name), directory / name)
  return str(directory)


LOADER = textwrap.dedent('''
    import importlib.util, sys
    sys.path.append(sys.argv[1])
    assert importlib.util.find_spec('flax') is None, 'flax importable'
    assert importlib.util.find_spec('resnet_jax') is None, 'resnet_jax importable'
    import numpy as np
    from jax import export
    exp = export.deserialize(open(sys.argv[2], 'rb').read())
    images = np.load(sys.argv[3])
    out = {'one': exp.call(images[:1]), 'all': exp.call(images)}
    np.savez(sys.argv[4], **{k: np.asarray(v) for k, v in out.items()})
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in (
        'flax', 'resnet_jax', 'orbax', 'optax', 'tensorflow'))
    print(exp.platforms, loaded)
''')


def test_the_artifact_runs_with_jax_alone_and_gives_the_checkpoints_logits(
    run, tmp_path, child_env):
  directory, model, variables = run
  out = str(tmp_path / 'model.jaxexport')
  proc = run_export(child_env(), f'--checkpoint={directory}', f'--out={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout == '' and 'platforms cpu, cuda, tpu' in proc.stderr
  with open(out + '.json', encoding='utf-8') as f:
    meta = json.load(f)
  assert meta['platforms'] == ['cpu', 'cuda', 'tpu'] and meta['class_names'] == list(NAMES)
  assert meta['input']['shape'] == ['batch', 16, 16, 3] and meta['input']['dtype'] == 'uint8'
  assert meta['outputs'] == {'logits': {'shape': ['batch', 3], 'dtype': 'float32'}}
  batch = images(5)
  np.save(tmp_path / 'images.npy', batch)
  script = tmp_path / 'load.py'
  script.write_text(LOADER)
  # -I -S: no site-packages, no PYTHONPATH, no current directory: jax alone.
  proc = subprocess.run(
      [sys.executable, '-I', '-S', str(script), jax_only_path(tmp_path), out,
       str(tmp_path / 'images.npy'), str(tmp_path / 'out.npz')],
      capture_output=True, text=True, timeout=300, env={'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == "('cpu', 'cuda', 'tpu') []", proc.stdout
  got = np.load(tmp_path / 'out.npz')
  expected = checkpoint_logits(model, variables, batch)
  assert got['all'].dtype == np.float32 and got['all'].shape == (5, 3)
  assert_close(got['all'], expected)
  assert_close(got['one'], expected[:1])


def test_an_existing_out_is_refused_unless_overwrite(run, tmp_path, child_env):
  directory, _, _ = run
  out = tmp_path / 'model.jaxexport'
  out.write_bytes(b'keep me')
  proc = run_export(child_env(), f'--checkpoint={directory}', f'--out={out}')
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f'error: --out: {out} exists; pass --overwrite to replace it']
  assert out.read_bytes() == b'keep me' and not os.path.exists(f'{out}.json')
  proc = run_export(child_env(), f'--checkpoint={directory}', f'--out={out}',
                    '--overwrite', '--platforms=cpu')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert out.read_bytes()[:7] != b'keep me'


def test_float32_input_and_features(run):
  directory, model, variables = run
  restored = export.restore(directory, cpu_fast_paths=False)
  assert (restored.image_size, restored.num_classes, restored.class_names, restored.step) == (
      16, 3, NAMES, 0)
  exported = export.export_checkpoint(
      restored, input_dtype='float32', features=('stage2', 'pooled', 'logits'),
      platforms=('cpu',))
  x = np.random.default_rng(1).normal(size=(3, 16, 16, 3)).astype(np.float32)
  got = jax.export.deserialize(exported.serialize()).call(x)
  expected = model.apply(variables, x, train=False, features=('stage2', 'pooled', 'logits'))
  assert set(got) == {'stage2', 'pooled', 'logits'}
  for name in got:
    assert got[name].dtype == jnp.float32
    assert_close(got[name], expected[name])
  assert got['stage2'].shape == (3, 8, 8, 32)


def test_bad_requests_are_config_errors(run, tmp_path):
  directory, _, _ = run
  restored = export.restore(directory)
  with pytest.raises(ConfigError, match='platforms=gpu: choose among cpu, cuda, rocm, tpu'):
    export.export_checkpoint(restored, platforms=('gpu',))
  with pytest.raises(ConfigError, match="input='int8'"):
    export.export_checkpoint(restored, input_dtype='int8')
  with pytest.raises(ConfigError, match=r'unknown output\(s\) nope; valid for cifar-resnet8: '
                     'stem, stage1, stage2, stage3, pooled, logits'):
    export.select_outputs(restored, ['stage1', 'nope'])
  assert export.select_outputs(restored, ['logits', 'all']) == (
      'stem', 'stage1', 'stage2', 'stage3', 'logits')
  with pytest.raises(ConfigError, match='does not exist'):
    export.restore(str(tmp_path / 'nothing'))
  bare = tmp_path / 'bare'
  write_run(str(bare), mean=(), std=(), num_classes=0)
  os.remove(bare / workdir.DATASET_FILE)
  with pytest.raises(ConfigError, match='does not say its num_classes, mean'):
    export.restore(str(bare))
