"""Tests of resnet_jax.data: folder datasets, the tf.data and on-device paths.

Every image of the generated folder datasets encodes its id in its pixels
(R*256 + G, B = 200 as a "real pixel" marker), so the tests can tell exactly
which examples a batch holds even after a crop or a flip. Nothing here touches
the network; tfds data goes to tmp directories.
"""

import io
import json
import os
import subprocess
import sys
import tarfile

import jax
import numpy as np
import pytest
from PIL import Image

from resnet_jax import configlib
from resnet_jax import data
from resnet_jax import parallel
from resnet_jax import validation
from resnet_jax.errors import ConfigError
from resnet_jax.data import folder
from resnet_jax.data import preprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ('cat', 'dog')  # ClassLabel sorts names: cat=0, dog=1.


def make_config(**overrides):
  config = configlib.load(os.path.join(ROOT, 'configs', 'base.py'))
  for key, value in overrides.items():
    configlib.apply_override(config, key, value)
  return config


def id_image(i: int, size: int = 16) -> np.ndarray:
  img = np.zeros((size, size, 3), np.uint8)
  img[..., 0], img[..., 1], img[..., 2] = i // 256, i % 256, 200
  return img


def image_ids(images: np.ndarray) -> np.ndarray:
  """Ids from the centre pixel (inside the image for any 4-pixel crop)."""
  h, w = images.shape[-3:-1]
  c = images[..., h // 2, w // 2, :].astype(np.int64)
  return c[..., 0] * 256 + c[..., 1]


def write_folder(root, counts: dict[str, int], size: int = 16, first_id: int = 1,
                 fmt: str = 'PNG') -> dict[str, dict[int, int]]:
  """Writes split/class/id.png images; returns {split: {id: label}}."""
  truth, next_id = {}, first_id
  ext = {'PNG': 'png', 'JPEG': 'jpg'}[fmt]
  for split, n in counts.items():
    truth[split] = {}
    for k in range(n):
      label = k % len(CLASSES)
      path = os.path.join(root, split, CLASSES[label], f'{next_id:05d}.{ext}')
      os.makedirs(os.path.dirname(path), exist_ok=True)
      Image.fromarray(id_image(next_id, size)).save(path, format=fmt)
      truth[split][next_id] = label
      next_id += 1
  return truth


def to_numpy(batch):
  return jax.tree.map(np.asarray, batch)


def take(it, n):
  return [to_numpy(next(it)) for _ in range(n)]


@pytest.fixture(scope='module')
def ids_dataset(tmp_path_factory):
  """40 train / 15 test 16x16 PNGs; returns (dataset, data_dir, truth)."""
  src = tmp_path_factory.mktemp('ids') / 'tiny_ids'
  truth = write_folder(str(src), {'train': 40, 'test': 15})
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  return f'folder:{src}', data_dir, truth


def ids_config(ids_dataset, **overrides):
  dataset, data_dir, _ = ids_dataset
  kwargs = dict(dataset=dataset, data_dir=data_dir, batch_size=8, augment='cifar',
                shuffle_buffer_size=64, download=False)
  kwargs.update(overrides)
  return make_config(**kwargs)


# --- folder datasets ---------------------------------------------------------

def test_folder_meta_from_info(ids_dataset):
  meta = data.dataset_meta(ids_config(ids_dataset))
  assert meta == data.DatasetMeta(
      num_classes=2, image_shape=(16, 16, 3), num_train=40, num_eval=15,
      train_split='train', eval_split='test', name=ids_dataset[0])
  assert data.steps_per_epoch(ids_config(ids_dataset), meta) == 5


def test_folder_is_prepared_once_and_cached(ids_dataset):
  config = ids_config(ids_dataset)
  data.dataset_meta(config)
  builds = folder.build_count
  name = folder.dataset_name(folder.parse(config.dataset))
  info = os.path.join(config.data_dir, name, folder.VERSION, 'dataset_info.json')
  mtime = os.stat(info).st_mtime_ns
  data.dataset_meta(config)
  next(data.create_train_iter(config, data.dataset_meta(config)))
  assert folder.build_count == builds
  assert os.stat(info).st_mtime_ns == mtime


def test_folder_archive_matches_directory_and_edits_rebuild(tmp_path):
  src = tmp_path / 'shapes'
  truth = write_folder(str(src), {'train': 6, 'test': 4})
  archive = tmp_path / 'shapes.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(src, arcname='shapes')  # Under one top folder, as archives often are.
  data_dir = str(tmp_path / 'tfds')
  seen = {}
  for source in (src, archive):
    config = make_config(dataset=f'folder:{source}', data_dir=data_dir,
                         augment='none', batch_size=2, eval_batch_size=4)
    meta = data.dataset_meta(config)
    assert (meta.num_train, meta.num_eval, meta.num_classes) == (6, 4, 2)
    ids = []
    for batch in data.create_eval_iter(config, meta):
      batch = to_numpy(batch)
      ids += image_ids(batch['image'])[batch['mask']].tolist()
    seen[source] = sorted(ids)
  assert seen[src] == seen[archive] == sorted(truth['test'])
  # Different sources never share a prepared copy; an edit makes a new one.
  assert folder.dataset_name(str(src)) != folder.dataset_name(str(archive))
  before = folder.dataset_name(str(src))
  Image.fromarray(id_image(99)).save(src / 'train' / 'cat' / 'new.png')
  assert folder.dataset_name(str(src)) != before
  builds = folder.build_count
  config = make_config(dataset=f'folder:{src}', data_dir=data_dir)
  assert data.dataset_meta(config).num_train == 7
  assert folder.build_count == builds + 1


def _corrupt_folder(root):
  write_folder(root, {'train': 4, 'test': 2})
  bad = os.path.join(root, 'train', 'cat', 'broken.png')
  with open(bad, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n this is not a png')
  buf = io.BytesIO()
  Image.fromarray(id_image(77)).save(buf, format='JPEG')
  truncated = os.path.join(root, 'test', 'dog', 'truncated.jpg')
  with open(truncated, 'wb') as f:
    f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
  return bad, truncated


def test_corrupt_image_skipped_with_warning_and_count(tmp_path):
  bad, truncated = _corrupt_folder(str(tmp_path / 'src'))
  config = make_config(dataset=f'folder:{tmp_path / "src"}',
                       data_dir=str(tmp_path / 'tfds'), on_corrupt_image='skip')
  with pytest.warns(folder.CorruptImageWarning) as record:
    meta = data.dataset_meta(config)
  messages = ' '.join(str(w.message) for w in record)
  assert bad in messages and truncated in messages
  assert (meta.num_train, meta.num_eval) == (4, 2)
  from resnet_jax.data import sources
  builder = sources.prepared_builder(config, allow_download=False)
  assert builder.info.metadata['skipped_corrupt_images'] == 2


def test_corrupt_image_error_names_the_path(tmp_path):
  bad, _ = _corrupt_folder(str(tmp_path / 'src'))
  config = make_config(dataset=f'folder:{tmp_path / "src"}',
                       data_dir=str(tmp_path / 'tfds'), on_corrupt_image='error')
  with pytest.raises(ConfigError, match=r'unreadable image .*(broken.png|truncated.jpg)'):
    data.dataset_meta(config)


@pytest.mark.parametrize('suffix', ['.tar.gz', '.tar'])
def test_a_truncated_archive_is_one_line_naming_it(tmp_path, suffix):
  src = tmp_path / 'shapes'
  write_folder(str(src), {'train': 40, 'test': 4})
  archive = tmp_path / f'shapes{suffix}'
  with tarfile.open(archive, 'w:gz' if suffix == '.tar.gz' else 'w') as tar:
    tar.add(src, arcname='shapes')
  whole = archive.read_bytes()
  # A cut anywhere must be caught, including one that lands exactly on a tar
  # header boundary (which tarfile itself reads as a quiet end of the archive)
  # or in the gzip trailer. The bytes vary with mtimes, so try many cuts.
  if suffix == '.tar.gz':
    cuts = sorted({len(whole) * k // 16 for k in range(1, 16)} | {len(whole) - 4})
  else:
    # Past the end-of-archive block lies only record padding, which may go.
    with tarfile.open(archive) as tar:
      tar.getmembers()
      whole_end = tar.offset + tarfile.BLOCKSIZE
    cuts = sorted({whole_end * k // 16 for k in range(1, 16)}
                  | set(range(512, whole_end, 7 * 512)) | {whole_end - 1})
  for i, size in enumerate(cuts):
    cut = tmp_path / f'cut{i}{suffix}'
    cut.write_bytes(whole[:size])  # As `head -c` of a download would.
    config = make_config(dataset=f'folder:{cut}', data_dir=str(tmp_path / 'tfds'))
    with pytest.raises(ConfigError) as e:
      data.dataset_meta(config)
    message = str(e.value)
    assert message.startswith(f'archive {cut} is damaged or truncated'), (size, message)
    assert '\n' not in message and f'{size:,} bytes' in message
  # And the whole archive still reads.
  config = make_config(dataset=f'folder:{archive}', data_dir=str(tmp_path / 'tfds'))
  assert data.dataset_meta(config).num_classes == 2


def test_folder_layout_and_size_errors(tmp_path):
  src = tmp_path / 'mixed'
  # Mixed sizes, formats and colour modes: stored as (None, None, 3).
  for i, (mode, size, fmt) in enumerate([('RGB', (20, 12), 'JPEG'), ('L', (9, 9), 'PNG'),
                                         ('RGBA', (16, 16), 'PNG'), ('P', (10, 14), 'PNG')]):
    path = src / ('train' if i < 3 else 'test') / CLASSES[i % 2] / f'{i}.{fmt.lower()}'
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path, format=fmt)
  config = make_config(dataset=f'folder:{src}', data_dir=str(tmp_path / 'tfds'),
                       augment='none', batch_size=3)
  with pytest.raises(ConfigError, match='image_size'):
    data.dataset_meta(config)
  config.image_size = 8
  meta = data.dataset_meta(config)
  assert meta.image_shape == (8, 8, 3)
  batch = to_numpy(next(data.create_train_iter(config, meta)))
  assert batch['image'].shape == (3, 8, 8, 3) and batch['image'].dtype == np.uint8

  (src / 'train' / 'stray.png').write_bytes(b'')  # split/image, no class.
  config = make_config(dataset=f'folder:{src}', data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(ConfigError, match='split/class/image'):
    data.dataset_meta(config)
  with pytest.raises(ConfigError, match='does not exist'):
    data.dataset_meta(make_config(dataset=f'folder:{tmp_path}/nope'))


# --- the training iterator -----------------------------------------------------

@pytest.mark.parametrize('on_device', [False, True])
def test_train_batches_epochs_and_determinism(ids_dataset, on_device):
  config = ids_config(ids_dataset, on_device_data=on_device)
  meta = data.dataset_meta(config)
  truth = ids_dataset[2]['train']
  batches = take(data.create_train_iter(config, meta), 10)  # Two epochs.
  assert batches[0]['image'].shape == (8, 16, 16, 3)
  assert batches[0]['image'].dtype == np.uint8
  assert batches[0]['label'].shape == (8,) and batches[0]['label'].dtype == np.int32
  ids = np.concatenate([image_ids(b['image']).ravel() for b in batches])
  labels = np.concatenate([b['label'].ravel() for b in batches])
  assert labels.tolist() == [truth[i] for i in ids]
  epoch0, epoch1 = ids[:40], ids[40:]
  # Each epoch is a permutation of the split, reshuffled every epoch.
  assert sorted(epoch0) == sorted(epoch1) == sorted(truth)
  assert epoch0.tolist() != epoch1.tolist()

  again = take(data.create_train_iter(config, meta), 10)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  other = take(data.create_train_iter(ids_config(
      ids_dataset, on_device_data=on_device, seed=1), meta), 5)
  assert image_ids(other[0]['image']).tolist() != image_ids(batches[0]['image']).tolist()


@pytest.mark.parametrize('on_device', [False, True])
def test_resume_sees_the_uninterrupted_batches(ids_dataset, on_device):
  config = ids_config(ids_dataset, on_device_data=on_device)
  meta = data.dataset_meta(config)
  reference = take(data.create_train_iter(config, meta), 13)
  for start in (3, 5, 8, 12):
    resumed = take(data.create_train_iter(config, meta, start_step=start), 13 - start)
    for a, b in zip(reference[start:], resumed):
      # Images include the host augmentation: identical crops and flips too.
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])


def test_host_augmentation_is_applied(ids_dataset):
  config = ids_config(ids_dataset)
  batch = to_numpy(next(data.create_train_iter(config, data.dataset_meta(config))))
  padded = batch['image'][..., 2] == 0  # Zero padding moved into the crop.
  assert padded.any() and not padded.all()


# --- evaluation ------------------------------------------------------------------

@pytest.mark.parametrize('on_device', [False, True])
@pytest.mark.parametrize('eval_batch', [1, 4, 15, 32])
def test_eval_covers_every_example_once(ids_dataset, on_device, eval_batch):
  config = ids_config(ids_dataset, on_device_data=on_device, eval_batch_size=eval_batch)
  meta = data.dataset_meta(config)
  truth = ids_dataset[2]['test']
  batches = [to_numpy(b) for b in data.create_eval_iter(config, meta)]
  assert len(batches) == -(-15 // eval_batch)
  ids, labels = [], []
  for b in batches:
    assert b['image'].shape == (eval_batch, 16, 16, 3)
    assert b['mask'].dtype == bool
    ids += image_ids(b['image'])[b['mask']].tolist()
    labels += b['label'][b['mask']].tolist()
    assert (b['image'][~b['mask']] == 0).all()
  assert sorted(ids) == sorted(truth)
  assert labels == [truth[i] for i in ids]

  config.num_eval_batches = 2
  assert len(list(data.create_eval_iter(config, meta))) == min(2, len(batches))


# --- device_preprocess and the augmentation semantics ------------------------------

def test_device_preprocess_normalises_like_the_formula():
  images = np.random.RandomState(0).randint(0, 256, (4, 8, 8, 3)).astype(np.uint8)
  for augment, mean, std in [('cifar', preprocess.CIFAR_MEAN, preprocess.CIFAR_STD),
                             ('imagenet', preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)]:
    config = make_config(augment=augment)
    out = data.device_preprocess(config, jax.random.key(0), images, train=True)
    expected = (images / 255.0 - np.array(mean)) / np.array(std)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
  # With on_device_data the crop + flip happens here, only when training.
  config = make_config(augment='cifar', on_device_data=True)
  plain = data.device_preprocess(config, jax.random.key(0), images, train=False)
  augmented = data.device_preprocess(config, jax.random.key(0), images, train=True)
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(preprocess.normalize('cifar', images)))
  assert not np.array_equal(np.asarray(plain), np.asarray(augmented))


def test_tf_and_jax_crop_flip_agree_exactly():
  import tensorflow as tf
  from resnet_jax.data import tf_augment
  image = np.random.RandomState(1).randint(1, 256, (8, 8, 3)).astype(np.uint8)
  offsets = np.array([(r, c) for r in range(9) for c in range(9)] * 2, np.int32)
  flips = np.repeat([False, True], 81)
  jax_out = np.asarray(preprocess.crop_flip(
      np.repeat(image[None], len(flips), 0), offsets, flips))
  for o, f, j in zip(offsets, flips, jax_out):
    tf_out = tf_augment.crop_flip(tf.constant(image), tf.constant(o), tf.constant(f))
    np.testing.assert_array_equal(tf_out.numpy(), j)


def _decode_crop_flip(images):
  """(row offset, col offset, flipped) of 'cifar' crops of a position image."""
  w = images.shape[2]
  res = []
  for img in images.astype(np.int64):
    r = np.argwhere(img[..., 2] == 1)[0][0]  # A row with real (not padding) pixels.
    cols = np.flatnonzero(img[r, :, 2] == 1)
    flipped = img[r, cols[1], 1] < img[r, cols[0], 1]
    c = cols[0]
    src_c = w - 1 - c if flipped else c
    res.append((img[r, c, 0] - 1 - r + 4, img[r, c, 1] - 1 - src_c + 4, int(flipped)))
  return np.array(res, np.int64)


def test_tf_and_jax_augmentation_statistics_agree():
  import tensorflow as tf
  from resnet_jax.data import tf_augment
  h = w = 12
  pos = np.zeros((h, w, 3), np.uint8)
  pos[..., 0] = np.arange(h)[:, None] + 1
  pos[..., 1] = np.arange(w)[None, :] + 1
  pos[..., 2] = 1
  n = 2700
  seed = tf.constant([7, 0], tf.int64)
  tf_images = tf.data.Dataset.range(n).map(
      lambda i: tf_augment.cifar_train(
          tf.constant(pos), tf.random.experimental.stateless_fold_in(seed, i))
  ).batch(n).get_single_element().numpy()
  jax_images = np.asarray(preprocess.random_crop_flip(
      jax.random.key(7), np.repeat(pos[None], n, 0)))
  for images in (tf_images, jax_images):
    stats = _decode_crop_flip(images)
    for axis in (0, 1):
      counts = np.bincount(stats[:, axis], minlength=9)
      assert len(counts) == 9  # Offsets in [0, 8] only.
      assert (np.abs(counts / n - 1 / 9) < 0.03).all(), counts
    assert abs(stats[:, 2].mean() - 0.5) < 0.04


def test_imagenet_augmentation_on_jpegs(tmp_path):
  src = tmp_path / 'photos'
  for split, n in (('train', 6), ('validation', 3)):
    for i in range(n):
      img = np.full((48, 64, 3), (200, 30, 30), np.uint8)  # Red border ...
      img[3:-3, 3:-3] = (20, 40, 220)  # ... around a blue centre.
      path = src / split / CLASSES[i % 2] / f'{i}.jpg'
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(img).save(path, quality=95)
  config = make_config(dataset=f'folder:{src}', data_dir=str(tmp_path / 'tfds'),
                       augment='imagenet', image_size=24, batch_size=6,
                       eval_batch_size=3)
  meta = data.dataset_meta(config)
  assert meta.image_shape == (24, 24, 3) and meta.eval_split == 'validation'
  batch = to_numpy(next(data.create_train_iter(config, meta)))
  assert batch['image'].shape == (6, 24, 24, 3) and batch['image'].dtype == np.uint8
  evals = [to_numpy(b) for b in data.create_eval_iter(config, meta)]
  assert len(evals) == 1 and evals[0]['mask'].all()
  # The centre 224/256 of the shorter side excludes the 3-pixel border (JPEG
  # blurs colours across it a little; a resize of the whole image would not
  # be blue at the corners).
  eval_images = evals[0]['image'].reshape(-1, 24, 24, 3).astype(int)
  blue, red = np.array((20, 40, 220)), np.array((200, 30, 30))
  assert np.abs(eval_images[:, 4:-4, 4:-4] - blue).max() < 12
  assert (np.linalg.norm(eval_images - blue, axis=-1)
          < np.linalg.norm(eval_images - red, axis=-1)).all()
  again = to_numpy(next(iter(data.create_eval_iter(config, meta))))
  np.testing.assert_array_equal(evals[0]['image'], again['image'])


# --- fake data, config errors ------------------------------------------------------

def test_fake_data():
  config = make_config(dataset='fake', image_size=16, num_classes=10, batch_size=8,
                       eval_batch_size=5000, augment='none')
  meta = data.dataset_meta(config)
  assert meta.num_classes == 10 and meta.image_shape == (16, 16, 3)
  batches = take(data.create_train_iter(config, meta), 5)
  assert batches[0]['image'].shape == (8, 16, 16, 3)
  assert batches[0]['image'].dtype == np.uint8 and batches[0]['label'].dtype == np.int32
  np.testing.assert_array_equal(batches[0]['image'], batches[4]['image'])
  resumed = take(data.create_train_iter(config, meta, start_step=2), 1)[0]
  np.testing.assert_array_equal(resumed['image'], batches[2]['image'])
  masks = [np.asarray(b['mask']) for b in data.create_eval_iter(config, meta)]
  assert sum(m.sum() for m in masks) == meta.num_eval
  default = data.dataset_meta(make_config(dataset='fake'))
  assert default.num_classes == 1000 and default.image_shape == (224, 224, 3)


def test_config_errors(ids_dataset, monkeypatch):
  with pytest.raises(ConfigError, match="augment='crop'"):
    validation.validate(ids_config(ids_dataset, augment='crop'))
  with pytest.raises(ConfigError, match='on_device_data'):
    validation.validate(ids_config(ids_dataset, augment='imagenet', on_device_data=True))
  with pytest.raises(ConfigError, match='num_classes=1 is smaller'):
    data.dataset_meta(ids_config(ids_dataset, num_classes=1))
  config = ids_config(ids_dataset, batch_size=8)
  monkeypatch.setattr(parallel, 'process_count', lambda: 3)
  with pytest.raises(ConfigError, match=r'batch_size=8 .* 3 \(3 process\(es\) x 1'):
    validation.validate(config)
  monkeypatch.undo()
  meta = data.dataset_meta(config)
  with pytest.raises(ConfigError, match='larger than the 40'):
    data.create_train_iter(ids_config(ids_dataset, batch_size=64), meta)


def test_import_does_not_load_tensorflow():
  code = (
      'import sys\n'
      'import jax, numpy as np\n'
      'from resnet_jax import configlib\n'
      'import resnet_jax.data as data\n'
      "config = configlib.load('configs/fake_data.py:model=cifar20')\n"
      'config.batch_size = 8; config.num_eval_batches = 1\n'
      'meta = data.dataset_meta(config)\n'
      'batch = next(data.create_train_iter(config, meta))\n'
      'list(data.create_eval_iter(config, meta))\n'
      "x = data.device_preprocess(config, jax.random.key(0), batch['image'], train=True)\n"
      "assert x.dtype == np.float32, x.dtype\n"
      "loaded = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]\n"
      "assert not loaded, loaded\n"
      "print('ok')\n")
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0 and 'ok' in out.stdout, out.stderr[-2000:]


def test_pipeline_benchmark_prints_json_lines():
  out = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.pipeline_benchmark', '--only=imagenet',
       '--imagenet_images=16', '--imagenet_batch_size=8', '--steps=2'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in out.stdout.strip().splitlines()]
  names = [r['benchmark'] for r in rows]
  assert names == ['host', 'imagenet_prepare', 'imagenet_tfdata', 'imagenet_eval']
  assert rows[2]['images_per_sec'] > 0 and rows[2]['image_size'] == 224
