"""Registered tfds datasets: offline behaviour, manual_dir, array_record, no TensorFlow.

No test reaches the network: the download host is made unresolvable (or
slow) by patching `socket.getaddrinfo`, and tfds' own download path is
patched to fail the test if anything calls it. Preparing a tfds dataset needs
TensorFlow (installed for the tests); reading it, training and evaluating on
it must not (checked in a subprocess where `import tensorflow` fails).
"""

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from resnet_jax import configlib
from resnet_jax import data
from resnet_jax import parallel
from resnet_jax.data import tfds_source
from resnet_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(**overrides):
  config = configlib.load(os.path.join(ROOT, 'configs', 'base.py'))
  for key, value in overrides.items():
    configlib.apply_override(config, key, value)
  return config


def open_input(prepare=False, **overrides):
  return data.open_input(data.resolve(make_config(num_workers=0, **overrides)),
                         prepare=prepare)


class TinyGrey(tfds.core.GeneratorBasedBuilder):
  """20 train / 7 test greyscale 8x8 images, label i % 3, pixel value i."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(8, 8, 1)),
        'label': tfds.features.ClassLabel(names=['a', 'b', 'c'])}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(20, 0), 'test': self._generate_examples(7, 20)}

  def _generate_examples(self, n=0, first=0):
    for i in range(first, first + n):
      yield i, {'image': np.full((8, 8, 1), i, np.uint8), 'label': i % 3}


@pytest.fixture(scope='module')
def tiny_grey(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  TinyGrey(data_dir=data_dir, file_format='array_record').download_and_prepare()
  return data_dir


@pytest.fixture
def offline(monkeypatch):
  """No name resolves, and tfds' downloader must never be reached."""
  def no_dns(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')
  monkeypatch.setattr(socket, 'getaddrinfo', no_dns)
  from tensorflow_datasets.core.download import downloader
  def no_download(*args, **kwargs):
    raise AssertionError('tfds tried to download')
  monkeypatch.setattr(downloader._Downloader, 'download', no_download)


def test_a_prepared_dataset_is_read_as_rgb_batches(tiny_grey):
  inputs = open_input(dataset='tiny_grey', data_dir=tiny_grey, batch_size=4,
                      eval_batch_size=4, augment='none', train_split='train[:16]')
  meta = inputs.meta
  assert (meta.num_classes, meta.image_shape, meta.num_train, meta.num_eval) == (
      3, (8, 8, 3), 16, 7)
  assert meta.class_names == ('a', 'b', 'c') and meta.mean == (0.485, 0.456, 0.406)
  # Encoded (PNG) records of one size: decoded once and kept on the devices.
  assert inputs.resident and not inputs.dataset.decoded
  mesh = parallel.make_mesh()
  batch = jax.tree.map(np.asarray, next(inputs.train_batches(mesh)))
  assert batch['image'].shape == (4, 8, 8, 3)
  values = batch['image'][:, 0, 0, 0].astype(int)
  np.testing.assert_array_equal(batch['image'][..., 0], batch['image'][..., 2])
  assert batch['label'].tolist() == (values % 3).tolist() and values.max() < 20
  seen = []
  for b in inputs.eval_batches(mesh):
    b = jax.tree.map(np.asarray, b)
    seen += b['image'][b['mask'], 0, 0, 0].tolist()
  assert sorted(seen) == list(range(20, 27))


def test_a_tfrecord_dataset_names_the_conversion(tmp_path):
  TinyGrey(data_dir=str(tmp_path), file_format='tfrecord').download_and_prepare()
  with pytest.raises(ConfigError, match='tfds convert_format'):
    open_input(dataset='tiny_grey', data_dir=str(tmp_path), augment='none')


def test_unprepared_dataset_fails_within_seconds_offline(tmp_path, offline):
  start = time.time()
  with pytest.raises(ConfigError) as err:
    open_input(dataset='cifar10', data_dir=str(tmp_path), download=True, prepare=True)
  assert time.time() - start < 10
  message = str(err.value)
  for hint in ('not reachable', 'www.cs.toronto.edu', 'cifar-10-binary.tar.gz',
               '--config.manual_dir', 'folder:PATH', '--config.data_dir'):
    assert hint in message, (hint, message)


def test_download_disallowed_and_reading_fail_at_once(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_source, '_reachable', lambda host: True)
  def no_prepare(*args, **kwargs):
    raise AssertionError('download_and_prepare called')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_prepare)
  for download, prepare in ((False, True), (True, False), (False, False)):
    start = time.time()
    with pytest.raises(ConfigError, match='not prepared') as err:
      open_input(dataset='cifar10', data_dir=str(tmp_path), download=download,
                 prepare=prepare)
    assert time.time() - start < 5
    assert '--config.manual_dir' in str(err.value)


def test_probe_gives_up_on_a_hanging_resolver(monkeypatch):
  monkeypatch.setattr(socket, 'getaddrinfo', lambda *a, **k: time.sleep(30))
  start = time.time()
  assert not tfds_source._reachable('example.org', timeout=0.5)
  assert time.time() - start < 2


def test_unknown_dataset_and_manual_only_dataset(tmp_path):
  with pytest.raises(ConfigError, match='unknown dataset'):
    open_input(dataset='no_such_dataset_xyz', data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match='ILSVRC2012_img_train.tar') as err:
    open_input(dataset='imagenet2012', data_dir=str(tmp_path), prepare=True,
               augment='imagenet')
  assert '--config.manual_dir' in str(err.value)


def _fake_cifar10_archive(path, per_batch: int) -> None:
  """A (tiny) file with the layout of the official cifar-10-binary.tar.gz."""
  rng = np.random.RandomState(0)

  def records(n):
    labels = rng.randint(0, 10, (n, 1)).astype(np.uint8)
    pixels = rng.randint(0, 256, (n, 3072)).astype(np.uint8)
    return np.concatenate([labels, pixels], axis=1).tobytes()

  files = {f'data_batch_{i}.bin': records(per_batch) for i in range(1, 6)}
  files['test_batch.bin'] = records(per_batch)
  files['batches.meta.txt'] = '\n'.join(
      ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
       'ship', 'truck']).encode() + b'\n'
  with tarfile.open(path, 'w:gz') as tar:
    for name, content in files.items():
      info = tarfile.TarInfo(f'cifar-10-batches-bin/{name}')
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))


def test_offline_preparation_from_manual_dir(tmp_path, offline, monkeypatch):
  manual = tmp_path / 'manual'
  manual.mkdir()
  archive = manual / 'cifar-10-binary.tar.gz'
  _fake_cifar10_archive(archive, per_batch=6)
  builder_cls = tfds.builder_cls('cifar10')
  (url, real), = builder_cls.url_infos.items()
  assert real.filename == 'cifar-10-binary.tar.gz'  # What the README tells users.
  settings = dict(dataset='cifar10', data_dir=str(tmp_path / 'tfds'),
                  manual_dir=str(manual), download=False, batch_size=4)
  # tfds checks the archive against its registered checksum: ours is not the
  # real file, so it is refused with an actionable error ...
  with pytest.raises(ConfigError, match='checksum'):
    open_input(prepare=True, **settings)
  # ... and accepted once the registered checksum is that of our file.
  content = archive.read_bytes()
  monkeypatch.setattr(builder_cls, 'url_infos', {url: tfds.core.download.checksums.UrlInfo(
      size=len(content), checksum=hashlib.sha256(content).hexdigest(),
      filename='cifar-10-binary.tar.gz')})
  inputs = open_input(prepare=True, **settings)
  meta = inputs.meta
  assert (meta.num_classes, meta.image_shape, meta.num_train, meta.num_eval) == (
      10, (32, 32, 3), 30, 6)
  assert meta.mean == (0.4914, 0.4822, 0.4465)  # CIFAR-10's own statistics.
  batch = jax.tree.map(np.asarray, next(inputs.train_batches(parallel.make_mesh())))
  assert batch['image'].shape == (4, 32, 32, 3)


# A package named tensorflow whose import fails: `import tensorflow` raises in
# the subprocess, as where TensorFlow is not installed.
_NO_TF = 'raise ImportError("TensorFlow is not available in this test")\n'


def test_train_evaluate_and_benchmarks_run_without_tensorflow(tiny_grey, tmp_path, child_env):
  shadow = tmp_path / 'no_tf' / 'tensorflow'
  shadow.mkdir(parents=True)
  (shadow / '__init__.py').write_text(_NO_TF)
  folder = tmp_path / 'src'
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from test_data import write_folder  # pylint: disable=g-import-not-at-top
  write_folder(str(folder), {'train': 16, 'test': 8})
  env = child_env(PYTHONPATH=f'{shadow.parent}{os.pathsep}{ROOT}')
  model = ['--config=configs/cifar10.py', '--config.model.depth=8',
           '--config.batch_size=4', '--config.num_train_steps=2',
           '--config.log_every_steps=1', '--config.num_workers=1',
           '--config.warmup_steps=0']
  runs = {
      'tfds': [sys.executable, '-m', 'resnet_jax.main', *model, '--config.dataset=tiny_grey',
               f'--config.data_dir={tiny_grey}', '--config.placement=host',
               f'--workdir={tmp_path / "tfds_run"}'],
      'folder': [sys.executable, '-m', 'resnet_jax.main', *model,
                 f'--config.dataset=folder:{folder}', f'--config.data_dir={tmp_path / "d"}',
                 f'--workdir={tmp_path / "folder_run"}'],
      'evaluate': [sys.executable, '-m', 'resnet_jax.evaluate',
                   f'--checkpoint={tmp_path / "tfds_run"}'],
      'benchmark': [sys.executable, '-m', 'resnet_jax.benchmark',
                    '--config=configs/fake_data.py:model=cifar20', '--config.model.depth=8',
                    '--batch_size=4', '--steps=1', '--warmup=1'],
  }
  outputs = {}
  for name, command in runs.items():
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, (name, out.stderr[-3000:])
    outputs[name] = out.stdout
  assert json.loads(outputs['evaluate'].splitlines()[-1])['eval_count'] == 7
  assert json.loads(outputs['benchmark'].splitlines()[-1])['tensorflow_imported'] is False
