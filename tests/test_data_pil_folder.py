"""Tests of resnet_jax.data.pil_folder: folder datasets read with PIL, no TensorFlow.

The reference is the tfds folder path (`folder.py` prepares a tfds copy of
the same source): for every split expression and process shard, the arrays
must be equal to what TensorFlow reads from that copy. The generated sources
mix JPEG (noise, so any decoder difference shows), PNG, greyscale, RGBA,
palette and BMP images with an unreadable and a truncated file.
"""

import io
import itertools
import json
import os
import random
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from resnet_jax import configlib
from resnet_jax.errors import ConfigError
from resnet_jax.data import folder
from resnet_jax.data import pil_folder
from resnet_jax.data import tfds_layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16
CLASSES = ('cat', 'dog', 'emu')
# (format, mode) of image k in a split, cycling: stored as they are (JPEG and
# PNG in RGB or L) or converted once by folder.py (RGBA, palette, BMP).
KINDS = (('JPEG', 'RGB'), ('JPEG', 'RGB'), ('PNG', 'RGB'), ('JPEG', 'L'),
         ('PNG', 'L'), ('PNG', 'RGBA'), ('PNG', 'P'), ('BMP', 'RGB'))
EXT = {'JPEG': 'jpg', 'PNG': 'png', 'BMP': 'bmp'}


def make_config(**overrides):
  config = configlib.load(os.path.join(ROOT, 'configs', 'base.py'))
  overrides = {'on_device_data': True, 'augment': 'none', 'download': False,
               'folder_reader': 'pil', **overrides}
  for key, value in overrides.items():
    configlib.apply_override(config, key, value)
  return config


def noise_image(rng, mode):
  pixels = rng.integers(0, 256, (SIZE, SIZE, 4), np.uint8)
  image = Image.fromarray(pixels, 'RGBA')
  if mode == 'P':
    return image.convert('RGB').quantize(16)
  return image.convert(mode)


def write_source(root, counts, kinds=KINDS, seed=0):
  """split/class/NNNN.ext images of every kind, plus a broken and a truncated file."""
  rng = np.random.default_rng(seed)
  for split, n in counts.items():
    for k in range(n):
      fmt, mode = kinds[k % len(kinds)]
      path = os.path.join(root, split, CLASSES[k % len(CLASSES)], f'{k:04d}.{EXT[fmt]}')
      os.makedirs(os.path.dirname(path), exist_ok=True)
      noise_image(rng, mode).save(path, format=fmt, **({'quality': 75} if fmt == 'JPEG' else {}))
  os.makedirs(os.path.join(root, 'train', 'cat'), exist_ok=True)
  with open(os.path.join(root, 'train', 'cat', 'broken.png'), 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n this is not a png')
  buf = io.BytesIO()
  noise_image(rng, 'RGB').save(buf, format='JPEG')
  os.makedirs(os.path.join(root, 'test', 'dog'), exist_ok=True)
  with open(os.path.join(root, 'test', 'dog', 'truncated.jpg'), 'wb') as f:
    f.write(buf.getvalue()[:len(buf.getvalue()) // 2])


_DECODED = {}  # (builder directory, file name) -> image, decoded by TensorFlow once.


def tfds_arrays(builder, split):
  """What TensorFlow reads from the prepared tfds copy, in tfds' order.

  tfds reads the split (without decoding: the order and labels are its
  own, `file_name` names each example); each stored image is decoded once
  by TensorFlow, JPEGs with dct_method='INTEGER_ACCURATE' (libjpeg's
  default, PIL's): tfds' own decode uses INTEGER_FAST, a few levels apart
  (see test_tfds_folder_path_load_numpy_equals_pil).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  h, w, _ = builder.info.features['image'].shape
  if not builder.info.splits[split].num_examples:
    return {'image': np.zeros((0, h, w, 3), np.uint8), 'label': np.zeros((0,), np.int32)}
  # (batch_size=-1 fails where pieces overlap: tfds counts them once.)
  raw, = builder.as_dataset(
      split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(try_autocache=False)).batch(1 << 20).as_numpy_iterator()
  images = []
  for name, encoded in zip(raw['file_name'], raw['image']):
    key = (str(builder.data_dir), name)
    if key not in _DECODED:
      _DECODED[key] = (tf.io.decode_jpeg(encoded, channels=3, dct_method='INTEGER_ACCURATE')
                       if tf.io.is_jpeg(encoded) else tf.io.decode_image(encoded, channels=3)
                       ).numpy()
    images.append(_DECODED[key])
  return {'image': np.stack(images), 'label': raw['label'].astype(np.int32)}


def assert_equal_arrays(got, want, what):
  assert got['image'].dtype == np.uint8 and got['label'].dtype == np.int32, what
  assert got['image'].shape == want['image'].shape, what
  np.testing.assert_array_equal(got['label'], want['label'], err_msg=str(what))
  np.testing.assert_array_equal(got['image'], want['image'], err_msg=str(what))


class Dataset:
  """A generated source, its tfds copy and its PIL config."""

  def __init__(self, tmp, counts, kinds=KINDS, shards=None, monkeypatch=None):
    self.source = str(tmp / 'src')
    write_source(self.source, counts, kinds)
    self.config = make_config(dataset=f'folder:{self.source}', data_dir=str(tmp / 'data'))
    if shards:
      # Force tfds (and, to match, pil_folder) to cut every split into shards.
      from tensorflow_datasets.core.utils import shard_utils  # pylint: disable=g-import-not-at-top
      monkeypatch.setattr(shard_utils.ShardConfig, 'calculate_number_shards',
                          classmethod(lambda cls, *args, **kwargs: shards))
      monkeypatch.setattr(tfds_layout, 'num_shards', lambda *args: shards)
    with pytest.warns(folder.CorruptImageWarning):
      self.builder = folder.prepared_builder(self.config.dataset, self.config.data_dir,
                                             'skip')
    with pytest.warns(folder.CorruptImageWarning):
      self.prepared = pil_folder.prepare(self.config)


@pytest.fixture(scope='module')
def mixed(tmp_path_factory):
  return Dataset(tmp_path_factory.mktemp('mixed'), {'train': 70, 'test': 21, 'validation': 5})


@pytest.fixture(scope='module')
def sharded(tmp_path_factory):
  with pytest.MonkeyPatch.context() as monkeypatch:
    return Dataset(tmp_path_factory.mktemp('sharded'), {'train': 70, 'test': 21,
                                                        'validation': 5},
                   shards=3, monkeypatch=monkeypatch)


def piece_spec(seed=0, count=20, n=70):
  """'train[a:b]+...' with `count` pieces (more reads than tf.data keeps open)."""
  rng = random.Random(seed)
  pieces = []
  for length in rng.choices([1, 3, 15, 16, 17, 31, 32, 33], k=count):
    start = rng.randrange(0, n - length + 1)
    pieces.append(f'train[{start}:{start + length}]')
  return '+'.join(pieces)


SPECS = ['train', 'test', 'validation', 'all', 'train[:45]', 'train[10:-5]',
         'train[25%:75%]', 'train[-33%:]', 'test[:7]+train[50:]+validation',
         'train[:40]+train[20:60]', piece_spec(0), piece_spec(1, count=40)]


# --- equal to the tfds folder path ---------------------------------------------

@pytest.mark.parametrize('name', ['mixed', 'sharded'])
def test_arrays_equal_the_tfds_copy(name, request):
  ds = request.getfixturevalue(name)
  if name == 'sharded':  # The forced shards are what tfds wrote.
    for split, info in ds.builder.info.splits.items():
      assert ds.prepared.shard_lengths[split] == info.shard_lengths
      assert len(info.shard_lengths) == 3
  specs = SPECS + (['train[1shard]', 'train[:2shard]+test[-1shard:]'] if name == 'sharded'
                   else ['train[0shard]'])
  for spec in specs:
    want = tfds_arrays(ds.builder, spec)
    got = pil_folder.load_split(ds.config, spec, train=False)
    assert_equal_arrays(got, want, spec)
    assert len(got['label']) == ds.prepared.num_examples(spec)


def test_process_shards_equal_tfds_splits(mixed):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  for spec in ('test', 'test[:7]+train[50:]+validation', piece_spec(2)):
    for count in (2, 3):
      for index in range(count):
        for train in (True, False):
          split = (tfds.split_for_jax_process(spec, process_index=index,
                                              process_count=count, drop_remainder=True)
                   if train else tfds.even_splits(spec, n=count)[index])
          got = pil_folder.load_split(mixed.config, spec, process_index=index,
                                      process_count=count, train=train)
          assert_equal_arrays(got, tfds_arrays(mixed.builder, split),
                              (spec, index, count, train))


def test_split_ranges_equal_tfds_for_many_sizes(mixed):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  splits = mixed.builder.info.splits
  for n in (0, 1, 2, 5, 7, 16, 31, 45, 70):
    for count in (1, 2, 3, 4, 6, 8):
      for drop in (True, False):
        for index in range(count):
          spec = f'train[:{n}]+test[{n % 21}:]'
          want = [(a.splitname, a.from_ or 0, splits[a.splitname].num_examples
                   if a.to is None else a.to)
                  for a in tfds.even_splits(spec, n=count, drop_remainder=drop)[index]
                  .to_absolute(splits)]
          got = mixed.prepared.pieces(spec, index=index, count=count, drop_remainder=drop)
          assert [(p.split, p.start, p.end) for p in got] == want, (spec, index, count, drop)


def test_bad_split_expressions_fail_like_tfds(mixed):
  for spec in ('train[:71]', 'nope', 'train[5]', 'train[:10%', 'all[:5]', 'train[1:2:3]',
               'train[101%:]'):
    with pytest.raises((ValueError, NotImplementedError)):
      mixed.builder.info.splits[spec].num_examples  # pylint: disable=expression-not-assigned
    with pytest.raises(ConfigError, match='not a valid split'):
      pil_folder.dataset_meta(make_config(dataset=mixed.config.dataset,
                                          data_dir=mixed.config.data_dir, train_split=spec))


def test_meta_equals_the_tfds_paths(mixed):
  from resnet_jax.data import sources  # pylint: disable=g-import-not-at-top
  for overrides in ({}, {'train_split': 'train[:45]', 'eval_split': 'validation'},
                    {'train_split': 'train+validation', 'num_classes': 5}):
    config = make_config(dataset=mixed.config.dataset, data_dir=mixed.config.data_dir,
                         **overrides)
    assert pil_folder.dataset_meta(config) == sources.dataset_meta(config, mixed.builder)
  assert mixed.prepared.class_names == list(mixed.builder.info.features['label'].names)
  assert mixed.prepared.skipped == mixed.builder.info.metadata['skipped_corrupt_images'] == 2


def test_record_sizes_and_shard_counts_are_tfds(mixed, tmp_path):
  from tensorflow_datasets.core.utils import shard_utils  # pylint: disable=g-import-not-at-top
  with open(os.path.join(mixed.prepared.directory, 'info.json')) as f:
    info = json.load(f)
  for split, split_info in mixed.builder.info.splits.items():
    assert info['splits'][split]['num_bytes'] == split_info.num_bytes
    assert info['splits'][split]['shard_lengths'] == split_info.shard_lengths
  # (tfds loops forever for more than 1024 GiB of fewer than 2048 examples.)
  for total, n in itertools.product((0, 10 << 20, 127 << 20, 128 << 20, 3 << 30, 70 << 30),
                                    (1, 3, 100, 5000, 10**6)):
    assert tfds_layout.num_shards(total, n) == (
          shard_utils.ShardConfig.calculate_number_shards(total, n)), (total, n)
  for n, k in ((10, 3), (7, 7), (100, 16), (45000, 2)):
    assert tfds_layout.shard_lengths_for(n, k) == [
        b - a for a, b in zip([0] + shard_utils.get_shard_boundaries(n, k),
                              shard_utils.get_shard_boundaries(n, k))]


def test_all_jpeg_source_with_cmyk_is_reencoded_as_tfds_does(tmp_path):
  # Only JPEGs: folder.py stores them as JPEG, re-encoding the CMYK one (q95).
  ds = Dataset(tmp_path, {'train': 6, 'test': 3},
               kinds=(('JPEG', 'RGB'), ('JPEG', 'CMYK'), ('JPEG', 'L')))
  assert ds.builder.info.features['image'].encoding_format == 'jpeg'
  for spec in ('train', 'test', 'all'):
    assert_equal_arrays(pil_folder.load_split(ds.config, spec, train=False),
                        tfds_arrays(ds.builder, spec), spec)


def test_tfds_folder_path_load_numpy_equals_pil(mixed):
  # The on-device tfds path (sources.load_numpy) must decode JPEGs as PIL
  # does (INTEGER_ACCURATE) for the two readers to give equal arrays.
  from resnet_jax.data import sources  # pylint: disable=g-import-not-at-top
  for spec in ('train', 'test[:7]+train[50:]+validation'):
    assert_equal_arrays(pil_folder.load_split(mixed.config, spec, train=False),
                        sources.load_numpy(mixed.builder, spec), spec)


# --- decoding, the cache, errors -------------------------------------------------

def test_worker_processes_decode_as_this_process(mixed, monkeypatch):
  monkeypatch.setattr(pil_folder, '_CHUNK', 8)  # 13 chunks: the pool starts.
  with pytest.warns(folder.CorruptImageWarning):
    serial = pil_folder._scan(mixed.source, 'skip', workers=1)
  with pytest.warns(folder.CorruptImageWarning):
    pooled = pil_folder._scan(mixed.source, 'skip', workers=2)
  assert serial[1:] == pooled[1:]  # Unreadable files, image size.
  for split in serial[0]:
    a, b = serial[0][split], pooled[0][split]
    assert (a.keys, a.labels, a.sizes) == (b.keys, b.labels, b.sizes)
    np.testing.assert_array_equal(np.stack(a.images), np.stack(b.images))


def test_cache_is_reused_then_redone_after_an_edit(tmp_path):
  ds = Dataset(tmp_path, {'train': 5, 'test': 3}, kinds=(('PNG', 'RGB'),))
  info = os.path.join(ds.prepared.directory, 'info.json')
  mtime, decodes = os.stat(info).st_mtime_ns, pil_folder.decode_count
  pil_folder._OPENED.clear()  # As a new process would start.
  assert pil_folder.dataset_meta(ds.config).num_train == 5
  assert pil_folder.decode_count == decodes and os.stat(info).st_mtime_ns == mtime
  Image.new('RGB', (SIZE, SIZE)).save(os.path.join(ds.source, 'train', 'cat', 'new.png'))
  with pytest.warns(folder.CorruptImageWarning):
    assert pil_folder.dataset_meta(ds.config).num_train == 6
  assert pil_folder.decode_count == decodes + 1
  assert pil_folder.prepare(ds.config).directory != ds.prepared.directory
  assert os.stat(info).st_mtime_ns == mtime  # The old copy is left alone.


def test_truncated_archive_is_a_config_error_naming_it(tmp_path):
  write_source(str(tmp_path / 'src'), {'train': 30, 'test': 3})
  archive = tmp_path / 'data.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(tmp_path / 'src', arcname='data')
  archive.write_bytes(archive.read_bytes()[:archive.stat().st_size // 2])
  config = make_config(dataset=f'folder:{archive}', data_dir=str(tmp_path / 'data'))
  with pytest.raises(ConfigError, match='truncated') as err:
    pil_folder.dataset_meta(config)
  assert str(archive) in str(err.value)


def test_config_errors(mixed, tmp_path):
  dataset, data_dir = mixed.config.dataset, mixed.config.data_dir
  with pytest.raises(ConfigError, match='on_device_data=True'):
    pil_folder.dataset_meta(make_config(dataset=dataset, data_dir=data_dir,
                                        on_device_data=False))
  with pytest.raises(ConfigError, match='folder_reader'):
    pil_folder.use_pil(make_config(dataset=dataset, folder_reader='tf'))
  assert not pil_folder.use_pil(make_config(dataset=dataset, folder_reader='tfds'))
  assert not pil_folder.use_pil(make_config(dataset='cifar10'))
  write_source(str(tmp_path / 'src'), {'train': 3, 'test': 1})
  with pytest.raises(ConfigError, match=r'unreadable image .*(broken\.png|truncated\.jpg)'):
    pil_folder.dataset_meta(make_config(dataset=f'folder:{tmp_path}/src',
                                        data_dir=str(tmp_path / 'data'),
                                        on_corrupt_image='error'))


# The GPU machine has no TensorFlow: 'auto' must pick PIL there and never import it.
_NO_TF = r'''
import json, sys
import numpy as np

class NoTensorFlow:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
      raise ModuleNotFoundError(f'No module named {name!r}')

sys.meta_path.insert(0, NoTensorFlow())
from resnet_jax import configlib
from resnet_jax.data import pil_folder
from resnet_jax.data import tfds_layout
config = configlib.load(sys.argv[1] + '/configs/base.py')
for key, value in json.loads(sys.argv[2]).items():
  configlib.apply_override(config, key, value)
assert pil_folder.use_pil(config)
meta = pil_folder.dataset_meta(config)
got = pil_folder.load_split(config, meta.train_split, process_index=1, process_count=2,
                            train=True)
want = np.load(sys.argv[3])
assert np.array_equal(got['image'], want['image']) and np.array_equal(got['label'], want['label'])
assert 'tensorflow' not in sys.modules and 'tensorflow_datasets' not in sys.modules
print('ok', meta.num_train, len(got['label']))
'''


def test_auto_reads_with_pil_where_tensorflow_is_absent(mixed, tmp_path):
  want = pil_folder.load_split(mixed.config, 'train', process_index=1, process_count=2,
                               train=True)
  np.savez(tmp_path / 'want.npz', **want)
  overrides = {'dataset': mixed.config.dataset, 'data_dir': str(tmp_path / 'data'),
               'on_device_data': True, 'folder_reader': 'auto'}
  out = subprocess.run([sys.executable, '-c', _NO_TF, ROOT, json.dumps(overrides),
                        str(tmp_path / 'want.npz')], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'),
                       timeout=120, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split() == ['ok', '70', '35']
