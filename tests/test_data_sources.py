"""Tests of registered tfds datasets: info-driven meta, offline behaviour, manual_dir.

No test reaches the network: the download host is made unresolvable (or
slow) by patching `socket.getaddrinfo`, and tfds' own download path is
patched to fail the test if anything calls it.
"""

import hashlib
import io
import os
import socket
import tarfile
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from resnet_jax import configlib
from resnet_jax import data
from resnet_jax.errors import ConfigError
from resnet_jax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(**overrides):
  config = configlib.load(os.path.join(ROOT, 'configs', 'base.py'))
  for key, value in overrides.items():
    configlib.apply_override(config, key, value)
  return config


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


def test_unprepared_dataset_fails_within_seconds_offline(tmp_path, offline):
  config = make_config(dataset='cifar10', data_dir=str(tmp_path), download=True)
  start = time.time()
  with pytest.raises(ConfigError) as err:
    data.prepare(config)
  assert time.time() - start < 10
  message = str(err.value)
  for hint in ('not reachable', 'www.cs.toronto.edu', 'cifar-10-binary.tar.gz',
               '--config.manual_dir', 'folder:PATH', '--config.data_dir'):
    assert hint in message, (hint, message)


def test_download_disallowed_and_dataset_meta_fail_at_once(tmp_path, monkeypatch):
  # dataset_meta never downloads, even with the network up.
  monkeypatch.setattr(sources, '_reachable', lambda host: True)
  def no_prepare(*args, **kwargs):
    raise AssertionError('download_and_prepare called')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_prepare)
  for download, call in ((False, data.prepare), (True, data.dataset_meta),
                         (False, data.dataset_meta)):
    config = make_config(dataset='cifar10', data_dir=str(tmp_path), download=download)
    start = time.time()
    with pytest.raises(ConfigError, match='not prepared') as err:
      call(config)
    assert time.time() - start < 5
    assert '--config.manual_dir' in str(err.value)


def test_probe_gives_up_on_a_hanging_resolver(monkeypatch):
  monkeypatch.setattr(sources, 'PROBE_TIMEOUT_S', 0.5)
  monkeypatch.setattr(socket, 'getaddrinfo', lambda *a, **k: time.sleep(30))
  start = time.time()
  assert not sources._reachable('example.org', timeout=0.5)
  assert time.time() - start < 2


def test_unknown_dataset_and_manual_only_dataset(tmp_path):
  with pytest.raises(ConfigError, match='unknown dataset'):
    data.dataset_meta(make_config(dataset='no_such_dataset_xyz', data_dir=str(tmp_path)))
  with pytest.raises(ConfigError, match='ILSVRC2012_img_train.tar') as err:
    data.prepare(make_config(dataset='imagenet2012', data_dir=str(tmp_path)))
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
  config = make_config(dataset='cifar10', data_dir=str(tmp_path / 'tfds'),
                       manual_dir=str(manual), download=False, batch_size=4,
                       eval_batch_size=4)
  # tfds checks the archive against its registered checksum: ours is not the
  # real file, so it is refused with an actionable error ...
  with pytest.raises(ConfigError, match='checksum'):
    data.dataset_meta(config)
  # ... and accepted once the registered checksum is that of our file.
  content = archive.read_bytes()
  fake_info = tfds.core.download.checksums.UrlInfo(
      size=len(content), checksum=hashlib.sha256(content).hexdigest(),
      filename='cifar-10-binary.tar.gz')
  monkeypatch.setattr(builder_cls, 'url_infos', {url: fake_info})
  meta = data.dataset_meta(config)
  assert meta == data.DatasetMeta(num_classes=10, image_shape=(32, 32, 3),
                                  num_train=30, num_eval=6, train_split='train',
                                  eval_split='test', name='cifar10')
  batch = jax.tree.map(np.asarray, next(data.create_train_iter(config, meta)))
  assert batch['image'].shape == (4, 32, 32, 3)


def _mock_metadata(data_dir, num_train: int, num_test: int, name='cifar10') -> None:
  """Writes a dataset_info with the given split sizes (for mock_data)."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name='train', shard_lengths=[num_train], num_bytes=0),
      tfds.core.SplitInfo(name='test', shard_lengths=[num_test], num_bytes=0),
  ]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


def test_registered_dataset_meta_and_batches_from_mock_data(tmp_path):
  _mock_metadata(tmp_path, num_train=64, num_test=20)
  config = make_config(dataset='cifar10', data_dir=str(tmp_path), batch_size=16,
                       eval_batch_size=8, train_split='train[:48]')
  with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    meta = data.dataset_meta(config)
    assert meta == data.DatasetMeta(
        num_classes=10, image_shape=(32, 32, 3), num_train=48, num_eval=20,
        train_split='train[:48]', eval_split='test', name='cifar10')
    assert data.steps_per_epoch(config, meta) == 3
    batch = jax.tree.map(np.asarray, next(data.create_train_iter(config, meta)))
    assert batch['image'].shape == (16, 32, 32, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32 and batch['label'].max() < 10
    evals = list(data.create_eval_iter(config, meta))
    assert len(evals) == 3  # ceil(20 / 8), the count comes from the info.


def test_greyscale_dataset_is_fed_as_rgb(tmp_path):
  _mock_metadata(tmp_path, num_train=32, num_test=8, name='mnist')
  config = make_config(dataset='mnist', data_dir=str(tmp_path), batch_size=8,
                       augment='none', train_split='train[:32]')
  with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    meta = data.dataset_meta(config)
    assert meta.image_shape == (28, 28, 3) and meta.num_classes == 10
    batch = jax.tree.map(np.asarray, next(data.create_train_iter(config, meta)))
    assert batch['image'].shape == (8, 28, 28, 3)
    np.testing.assert_array_equal(batch['image'][..., 0], batch['image'][..., 2])
