"""Tests for `python -m resnet_jax.predict` and the class names `weights import` records."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from resnet_jax import export
from resnet_jax import predict
from resnet_jax import weights
from resnet_jax import workdir
from resnet_jax.data import transforms
from resnet_jax.errors import ConfigError
from resnet_jax.weights import files

from test_export import MEAN, NAMES, STD, write_run  # pylint: disable=g-bad-import-order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures('compile_cache')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('predict') / 'run')
  model, variables = write_run(directory)
  return directory, model, variables


@pytest.fixture(scope='module')
def pictures(tmp_path_factory):
  """A folder of 4 images (sizes and modes vary; one nested), one unreadable file."""
  root = tmp_path_factory.mktemp('pictures')
  rng = np.random.default_rng(3)
  (root / 'sub').mkdir()
  paths = [root / 'a.png', root / 'b.jpg', root / 'sub' / 'c.png', root / 'd.bmp']
  Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(paths[0])
  Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)).save(paths[1])
  Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), 'L').save(paths[2])
  Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), 'RGBA').save(paths[3])
  (root / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
  (root / 'notes.txt').write_text('not an image name: skipped')
  return root, [str(p) for p in sorted(paths)]


def expected(model, variables, path: str) -> np.ndarray:
  """Softmax of the checkpoint's logits for one file, computed the evaluation's way."""
  from resnet_jax.data import placement  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    image = transforms.Transform('cifar', 16, 0, train=False)((f.read(), 0), None)['image']
  x = placement.preprocess(image[None], mean=MEAN, std=STD)
  return np.asarray(jax.nn.softmax(model.apply(variables, x, train=False)))[0]


def run_predict(env, *args):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.predict', *args], env=env,
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def test_cli_predicts_every_readable_image_and_names_the_others(run, pictures, child_env):
  directory, model, variables = run
  root, paths = pictures
  proc = run_predict(child_env(), f'--checkpoint={directory}', '--json', '--top_k=5',
                     '--batch_size=3', str(root), str(root / 'missing.png'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines() == [
      f'error: cannot read {root / "broken.jpg"}: not an image format PIL reads',
      f'error: cannot read {root / "missing.png"}: no such file or folder']
  rows = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [r['image'] for r in rows] == [str(root / 'a.png'), str(root / 'b.jpg'),
                                        str(root / 'd.bmp'), str(root / 'sub' / 'c.png')]
  for row in rows:
    top = row['top_k']
    assert len(top) == 3  # top_k is at most the number of classes.
    probabilities = expected(model, variables, row['image'])
    assert [c['label'] for c in top] == list(np.argsort(-probabilities))
    assert [c['name'] for c in top] == [NAMES[c['label']] for c in top]
    np.testing.assert_allclose([c['probability'] for c in top],
                               np.sort(probabilities)[::-1], rtol=1e-5, atol=1e-6)


def test_text_lines_and_exit_2_when_nothing_could_be_read(run, pictures, child_env):
  directory, _, _ = run
  root, paths = pictures
  proc = run_predict(child_env(), f'--checkpoint={directory}', '--top_k=2', paths[0])
  assert proc.returncode == 0, proc.stderr[-3000:]
  line, = proc.stdout.splitlines()
  assert line.startswith(paths[0] + '  ') and line.count('%') == 2
  assert any(f'  {name} ' in line for name in NAMES)
  proc = run_predict(child_env(), f'--checkpoint={directory}', str(root / 'broken.jpg'))
  assert proc.returncode == 2 and proc.stdout == ''
  assert proc.stderr.strip().splitlines() == [
      f'error: cannot read {root / "broken.jpg"}: not an image format PIL reads',
      'error: no image could be predicted (1 unreadable)']


def test_batches_give_the_same_predictions_and_bad_values_are_refused(run, pictures):
  directory, _, _ = run
  _, paths = pictures
  restored = export.restore(directory)
  one = list(predict.predict(restored, paths, top_k=3, batch_size=1))
  many = list(predict.predict(restored, paths, top_k=3, batch_size=8))
  assert [r['image'] for r in one] == paths
  for a, b in zip(one, many):
    assert [c['label'] for c in a['top_k']] == [c['label'] for c in b['top_k']]
    logits = np.array([c['logit'] for c in a['top_k']])
    np.testing.assert_allclose([c['logit'] for c in b['top_k']], logits, rtol=0,
                               atol=1e-5 * np.abs(logits).max())
  with pytest.raises(ConfigError, match='top_k=0 must be at least 1'):
    list(predict.predict(restored, paths, top_k=0))


def test_import_records_imagenet_class_names_and_predict_prints_them(tmp_path):
  names = files.imagenet_class_names()
  assert len(names) == 1000 and names[:3] == ('tench', 'goldfish', 'great white shark')
  assert names[-1] == 'toilet tissue'
  state_dict = weights.random_state_dict(weights.key_table('resnet18', 'torchvision'), 2)
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  st_numpy.save_file(state_dict, str(tmp_path / 'r18.safetensors'))
  out = str(tmp_path / 'tv_resnet18')
  proc = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.weights', 'import', '--source=torchvision',
       '--arch=resnet18', f'--input={tmp_path / "r18.safetensors"}', f'--output={out}'],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '1000 class names of imagenet2012' in proc.stdout
  dataset = workdir.read_dataset(out)
  assert dataset['class_names'] == list(names) and dataset['num_classes'] == 1000
  assert (dataset['name'], dataset['image_shape'], dataset['eval_split']) == (
      'imagenet2012', [224, 224, 3], 'validation')
  assert dataset['mean'] == [0.485, 0.456, 0.406] and dataset['std'] == [0.229, 0.224, 0.225]
  photo = tmp_path / 'photo.jpg'
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 250, 3), np.uint8)).save(
      photo)
  restored = export.restore(out)
  assert (restored.image_size, restored.eval_resize, restored.augment) == (224, 256,
                                                                          'imagenet')
  row, = predict.predict(restored, [str(photo)], top_k=2, batch_size=1)
  assert [c['name'] for c in row['top_k']] == [names[c['label']] for c in row['top_k']]


def test_a_head_of_another_size_gets_no_names():
  config = files.eval_config('cifar_resnet20', 'torch_cifar', 10)
  assert files.dataset_meta(config).class_names == files.CIFAR10_CLASSES
  config = files.eval_config('resnet18', 'torchvision', 10)
  meta = files.dataset_meta(config)
  assert meta.class_names == () and meta.num_classes == 10
