"""Tests of resnet_jax.data: specs, folder indexes, sources, the loader, placement.

Every image of the generated folder datasets encodes its id in its pixels
(R*256 + G, B = 200 as a "real pixel" marker), so the tests can tell exactly
which examples a batch holds even after a crop or a flip. Nothing here touches
the network; indexes go to tmp directories.
"""

import io
import json
import logging
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
from resnet_jax import specs
from resnet_jax.data import folder
from resnet_jax.data import loader
from resnet_jax.data import placement
from resnet_jax.data import sources
from resnet_jax.data import transforms
from resnet_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ('cat', 'dog')


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


def take(it, n):
  return [jax.tree.map(np.asarray, next(it)) for _ in range(n)]


@pytest.fixture(scope='module')
def ids_dataset(tmp_path_factory):
  """40 train / 15 test 16x16 PNGs; returns (dataset, data_dir, truth)."""
  src = tmp_path_factory.mktemp('ids') / 'tiny_ids'
  truth = write_folder(str(src), {'train': 40, 'test': 15})
  return f'folder:{src}', str(tmp_path_factory.mktemp('data')), truth


def ids_input(ids_dataset, **overrides) -> data.Input:
  dataset, data_dir, _ = ids_dataset
  kwargs = dict(dataset=dataset, data_dir=data_dir, batch_size=8, augment='cifar',
                download=False, num_workers=0)
  kwargs.update(overrides)
  return data.open_input(data.resolve(make_config(**kwargs)))


# --- specs ---------------------------------------------------------------------

def test_spec_errors_are_one_line_naming_the_field(ids_dataset, monkeypatch):
  cases = [(dict(augment='crop'), "augment='crop'"),
           (dict(placement='gpu'), "placement='gpu'"),
           (dict(placement='device', augment='imagenet'), "placement='device'"),
           (dict(num_workers=-2), 'num_workers=-2'),
           (dict(eval_resize=100, augment='imagenet'), 'eval_resize=100'),
           (dict(mean=(0.5, 0.5)), 'mean=(0.5, 0.5)'),
           (dict(dataset='folder:'), "dataset='folder:' names no dataset")]
  for overrides, message in cases:
    with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
      specs.resolve(make_config(**overrides))
  monkeypatch.setattr(parallel, 'process_count', lambda: 3)
  with pytest.raises(ConfigError, match=r'batch_size=8 .* 3 \(3 process\(es\) x 1'):
    specs.resolve(make_config(batch_size=8))
  monkeypatch.undo()
  with pytest.raises(ConfigError, match='num_classes=1 is smaller'):
    ids_input(ids_dataset, num_classes=1)
  with pytest.raises(ConfigError, match='larger than the 40'):
    _ = ids_input(ids_dataset, batch_size=64).steps_per_epoch


def test_split_expressions():
  sizes = {'train': 50, 'test': 10}
  assert sources.parse_split('train', sizes) == [('train', 0, 50)]
  assert sources.parse_split('train[:45]', sizes) == [('train', 0, 45)]
  assert sources.parse_split('train[-5:]', sizes) == [('train', 45, 50)]
  assert sources.parse_split('train[10%:20%]+test', sizes) == [('train', 5, 10),
                                                               ('test', 0, 10)]
  for bad, message in (('val', "split 'val' does not exist"), ('train[a:]', 'cannot read')):
    with pytest.raises(ConfigError, match=message):
      sources.parse_split(bad, sizes)


# --- folder indexes ------------------------------------------------------------------

def test_folder_meta_index_and_statistics(ids_dataset, caplog):
  inputs = ids_input(ids_dataset)
  meta = inputs.meta
  assert (meta.num_classes, meta.image_shape, meta.num_train, meta.num_eval) == (
      2, (16, 16, 3), 40, 15)
  assert (meta.train_split, meta.eval_split, meta.class_names) == ('train', 'test', CLASSES)
  # The statistics are the train split's own: R and G from the ids, B = 200.
  images = np.stack([id_image(i) for i in ids_dataset[2]['train']]) / 255
  np.testing.assert_allclose(meta.mean, images.mean((0, 1, 2)), atol=1e-6)
  # B never varies: its std is one level, not 0 (which would divide by zero).
  np.testing.assert_allclose(meta.std, np.maximum(images.std((0, 1, 2)), 1 / 255), atol=1e-6)
  assert meta.std[2] == pytest.approx(1 / 255)
  assert inputs.resident and inputs.dataset.decoded  # Small, fixed-size: on the devices.
  directory = folder.index_dir(ids_dataset[0][7:], ids_dataset[1])
  mtime = os.stat(os.path.join(directory, 'index.json')).st_mtime_ns
  folder._OPENED.clear()  # A new process: reads the index, does not scan again.
  with caplog.at_level(logging.INFO):
    assert ids_input(ids_dataset).meta == meta
  assert 'indexed' not in caplog.text
  assert os.stat(os.path.join(directory, 'index.json')).st_mtime_ns == mtime
  mean = ids_input(ids_dataset, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).meta.mean
  assert mean == (0.5, 0.5, 0.5)


def test_archive_equals_directory_and_edits_index_again(tmp_path):
  src = tmp_path / 'shapes'
  truth = write_folder(str(src), {'train': 6, 'test': 4})
  archive = tmp_path / 'shapes.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(src, arcname='shapes')  # Under one top folder, as archives often are.
  seen = {}
  for source in (src, archive):
    for limit in (folder.ARRAYS_LIMIT, 0):  # Decoded arrays; encoded files / blob.
      folder.ARRAYS_LIMIT, saved = limit, folder.ARRAYS_LIMIT
      try:
        inputs = data.open_input(data.resolve(make_config(
            dataset=f'folder:{source}', data_dir=str(tmp_path / f'data{limit}'),
            augment='none', batch_size=2, eval_batch_size=4, num_workers=0)))
      finally:
        folder.ARRAYS_LIMIT = saved
      assert inputs.dataset.decoded == bool(limit)
      assert (inputs.meta.num_train, inputs.meta.num_eval, inputs.meta.num_classes) == (6, 4, 2)
      batches = take(inputs.eval_batches(parallel.make_mesh()), 1)
      seen[source, limit] = batches[0]['image'][batches[0]['mask']]
  for images in seen.values():  # Every reader decodes the same pixels.
    np.testing.assert_array_equal(images, seen[src, folder.ARRAYS_LIMIT])
  assert sorted(image_ids(seen[src, 0])) == sorted(truth['test'])
  assert folder.index_dir(str(src), '/d') != folder.index_dir(str(archive), '/d')
  before = folder.index_dir(str(src), '/d')
  Image.fromarray(id_image(99)).save(src / 'train' / 'cat' / 'new.png')
  assert folder.index_dir(str(src), '/d') != before
  assert ids_input((f'folder:{src}', str(tmp_path / 'd2'), None)).meta.num_train == 7


def _corrupt_folder(root):
  write_folder(root, {'train': 4, 'test': 2})
  bad = os.path.join(root, 'train', 'cat', 'broken.png')
  with open(bad, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n this is not a png')
  open(os.path.join(root, 'train', 'dog', 'empty.png'), 'wb').close()
  buf = io.BytesIO()
  Image.fromarray(id_image(77)).save(buf, format='JPEG')
  truncated = os.path.join(root, 'test', 'dog', 'truncated.jpg')
  with open(truncated, 'wb') as f:
    f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
  return bad, truncated


def test_corrupt_images_are_skipped_logged_once_and_counted(tmp_path, caplog):
  bad, truncated = _corrupt_folder(str(tmp_path / 'src'))
  with caplog.at_level(logging.WARNING):
    inputs = ids_input((f'folder:{tmp_path / "src"}', str(tmp_path / 'data'), None))
  assert (inputs.meta.num_train, inputs.meta.num_eval) == (4, 2)
  lines = [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()]
  for path in (bad, truncated):
    assert sum(path in line for line in lines) == 1, lines
  assert any('empty.png: the file is empty (0 bytes)' in line for line in lines), lines
  assert not any('BytesIO' in line for line in lines), lines
  with open(os.path.join(folder.index_dir(str(tmp_path / 'src'), str(tmp_path / 'data')),
                         'index.json')) as f:
    assert json.load(f)['skipped_corrupt_images'] == 3
  with pytest.raises(ConfigError, match=r'unreadable image .*(broken.png|empty.png|truncated.jpg)'):
    ids_input((f'folder:{tmp_path / "src"}', str(tmp_path / 'data2'), None),
              on_corrupt_image='error')


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
    with tarfile.open(archive) as tar:
      tar.getmembers()
      whole_end = tar.offset + tarfile.BLOCKSIZE
    cuts = sorted({whole_end * k // 16 for k in range(1, 16)}
                  | set(range(512, whole_end, 7 * 512)) | {whole_end - 1})
  for i, size in enumerate(cuts):
    cut = tmp_path / f'cut{i}{suffix}'
    cut.write_bytes(whole[:size])  # As `head -c` of a download would.
    with pytest.raises(ConfigError) as e:
      ids_input((f'folder:{cut}', str(tmp_path / 'data'), None))
    message = str(e.value)
    assert message.startswith(f'archive {cut} is damaged or truncated'), (size, message)
    assert '\n' not in message and f'{size:,} bytes' in message
  # Nothing half-written is left behind; the whole archive still reads.
  assert not [d for d, _, _ in os.walk(tmp_path / 'data') if '.tmp' in os.path.basename(d)]
  assert ids_input((f'folder:{archive}', str(tmp_path / 'data'), None)).meta.num_classes == 2


def test_an_interrupted_index_is_cleaned_up_by_the_next_run(tmp_path):
  src = tmp_path / 'src'
  write_folder(str(src), {'train': 8, 'test': 2})
  directory = folder.index_dir(str(src), str(tmp_path / 'data'))
  stale = os.path.join(os.path.dirname(directory), f'.{os.path.basename(directory)}.tmpx')
  os.makedirs(stale)  # What a kill -9 during indexing leaves.
  open(os.path.join(stale, 'train.blob'), 'wb').write(b'x' * 1000)
  assert ids_input((f'folder:{src}', str(tmp_path / 'data'), None)).meta.num_train == 8
  assert not os.path.exists(stale)


def test_folder_layout_and_size_errors(tmp_path):
  src = tmp_path / 'mixed'
  # Mixed sizes, formats and colour modes: encoded, resized to image_size.
  for i, (mode, size, fmt) in enumerate([('RGB', (20, 12), 'JPEG'), ('L', (9, 9), 'PNG'),
                                         ('RGBA', (16, 16), 'PNG'), ('P', (10, 14), 'PNG')]):
    path = src / ('train' if i < 3 else 'test') / CLASSES[i % 2] / f'{i}.{fmt.lower()}'
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path, format=fmt)
  dataset = (f'folder:{src}', str(tmp_path / 'data'), None)
  with pytest.raises(ConfigError, match='image_size'):
    ids_input(dataset, augment='none')
  inputs = ids_input(dataset, augment='none', image_size=8, batch_size=3)
  assert inputs.meta.image_shape == (8, 8, 3) and not inputs.resident
  batch = take(inputs.train_batches(parallel.make_mesh()), 1)[0]
  assert batch['image'].shape == (3, 8, 8, 3) and batch['image'].dtype == np.uint8
  with pytest.raises(ConfigError, match="placement='device' keeps images at their stored"):
    ids_input(dataset, augment='none', image_size=8, placement='device')
  (src / 'train' / 'stray.png').write_bytes(b'')  # split/image, no class.
  with pytest.raises(ConfigError, match='split/class/image'):
    ids_input((f'folder:{src}', str(tmp_path / 'data3'), None))
  with pytest.raises(ConfigError, match='does not exist'):
    ids_input((f'folder:{tmp_path}/nope', str(tmp_path / 'data'), None))


# --- training batches -------------------------------------------------------------------

@pytest.mark.parametrize('placement', ['host', 'device'])
def test_train_batches_epochs_and_determinism(ids_dataset, placement):
  inputs = ids_input(ids_dataset, placement=placement)
  assert inputs.resident == (placement == 'device')
  truth = ids_dataset[2]['train']
  mesh = parallel.make_mesh()
  batches = take(inputs.train_batches(mesh), 10)  # Two epochs.
  assert batches[0]['image'].shape == (8, 16, 16, 3)
  assert batches[0]['image'].dtype == np.uint8 and batches[0]['label'].dtype == np.int32
  ids = np.concatenate([image_ids(b['image']) for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert labels.tolist() == [truth[i] for i in ids]
  epoch0, epoch1 = ids[:40], ids[40:]
  # Each epoch is a permutation of the split, reshuffled every epoch.
  assert sorted(epoch0) == sorted(epoch1) == sorted(truth)
  assert epoch0.tolist() != epoch1.tolist()
  again = take(inputs.train_batches(mesh), 10)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  other = take(ids_input(ids_dataset, placement=placement, seed=1).train_batches(mesh), 1)
  assert image_ids(other[0]['image']).tolist() != image_ids(batches[0]['image']).tolist()
  if placement == 'host':  # Cropped and flipped on the host: zero padding moved in.
    padded = batches[0]['image'][..., 2] == 0
    assert padded.any() and not padded.all()
  else:  # Resident images arrive as stored; the step crops and flips them.
    assert (batches[0]['image'][..., 2] == 200).all()


def test_host_and_resident_show_the_same_examples_in_the_same_order(ids_dataset):
  mesh = parallel.make_mesh()
  host = take(ids_input(ids_dataset, placement='host').train_batches(mesh), 12)
  device = take(ids_input(ids_dataset, placement='device').train_batches(mesh), 12)
  for a, b in zip(host, device):
    np.testing.assert_array_equal(image_ids(a['image']), image_ids(b['image']))
    np.testing.assert_array_equal(a['label'], b['label'])


@pytest.mark.parametrize('placement', ['host', 'device'])
def test_resume_sees_the_uninterrupted_batches(ids_dataset, placement):
  inputs = ids_input(ids_dataset, placement=placement)
  mesh = parallel.make_mesh()
  reference = take(inputs.train_batches(mesh), 13)
  for start in (3, 5, 8, 12):
    resumed = take(inputs.train_batches(mesh, start_step=start), 13 - start)
    for a, b in zip(reference[start:], resumed):
      # Images include the host augmentation: identical crops and flips too.
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])


def test_rows_per_process_and_worker_processes_change_nothing(ids_dataset):
  """The batch of a step is the same whatever the processes and worker processes."""
  source = ids_input(ids_dataset).dataset.train
  transform = transforms.Transform('cifar', 16)

  def batches(index, count, workers, start=0, n=7):
    it = loader.train_batches(source, transform, seed=3, steps_per_epoch=5,
                              layout=loader.Layout(8, index, count), start_step=start,
                              workers=workers)
    return [next(it) for _ in range(n)]

  whole = batches(0, 1, 0)
  halves = [batches(i, 2, 0) for i in range(2)]
  quarters = [batches(i, 4, 0) for i in range(4)]
  with_workers = batches(1, 2, 2, start=2, n=5)
  for step, b in enumerate(whole):
    for parts in (halves, quarters):
      np.testing.assert_array_equal(
          np.concatenate([p[step]['image'] for p in parts]), b['image'])
    if step >= 2:
      np.testing.assert_array_equal(with_workers[step - 2]['image'], halves[1][step]['image'])


def test_repeated_augmentation_shows_each_example_k_times_on_different_devices(ids_dataset):
  inputs = ids_input(ids_dataset, repeated_augmentation=2, placement='host')
  batches = take(inputs.train_batches(parallel.make_mesh()), 5)  # One epoch of 40.
  ids = [image_ids(b['image']) for b in batches]
  seen = np.concatenate(ids)
  assert sorted(np.unique(seen, return_counts=True)[1]) == [2] * 20  # Half the split, twice.
  for batch in ids:  # Copies 4 rows apart: the two halves of the batch hold one each.
    assert sorted(batch[:4]) == sorted(batch[4:])
  # Different crops and flips of the same image.
  first = batches[0]['image']
  twin = int(np.flatnonzero(ids[0][4:] == ids[0][0])[0]) + 4
  assert not np.array_equal(first[0], first[twin])
  with pytest.raises(ConfigError, match='repeated_augmentation=3 must be .* divides batch_size=8'):
    ids_input(ids_dataset, repeated_augmentation=3)


def test_recipe_host_augmentations_are_deterministic_and_need_the_host(ids_dataset):
  transform = transforms.Transform('cifar', 16, rand_augment='rand-m9-mstd0.5-inc1',
                                   random_erasing=1.0, mean=(0.5,) * 3, std=(0.25,) * 3)
  record = (id_image(5), 1)
  outs = [transform(record, np.random.default_rng(s))['image'] for s in (0, 0, 1)]
  np.testing.assert_array_equal(outs[0], outs[1])
  assert not np.array_equal(outs[0], outs[2])
  plain = transforms.Transform('cifar', 16)(record, np.random.default_rng(0))['image']
  assert not np.array_equal(outs[0], plain)
  assert not ids_input(ids_dataset, trivial_augment=True).resident  # auto: the host.
  with pytest.raises(ConfigError, match='run in the host pipeline'):
    specs.resolve(make_config(random_erasing=0.25, placement='device'))
  with pytest.raises(ConfigError, match='rand-m9'):
    specs.resolve(make_config(rand_augment='rand-m9-xx'))


# --- evaluation -------------------------------------------------------------------------

@pytest.mark.parametrize('eval_batch', [1, 4, 15, 32])
def test_eval_covers_every_example_once(ids_dataset, eval_batch):
  inputs = ids_input(ids_dataset, eval_batch_size=eval_batch)
  truth = ids_dataset[2]['test']
  batches = take(inputs.eval_batches(parallel.make_mesh()), -(-15 // eval_batch))
  ids, labels = [], []
  for b in batches:
    assert b['image'].shape == (eval_batch, 16, 16, 3) and b['mask'].dtype == bool
    ids += image_ids(b['image'])[b['mask']].tolist()
    labels += b['label'][b['mask']].tolist()
    assert (b['image'][~b['mask']] == 0).all()
  assert sorted(ids) == sorted(truth)
  assert labels == [truth[i] for i in ids]
  capped = ids_input(ids_dataset, eval_batch_size=eval_batch, num_eval_batches=2)
  assert len(list(capped.eval_batches(parallel.make_mesh()))) == min(2, len(batches))


# --- transforms and in-step preprocessing ---------------------------------------------------

def test_preprocess_normalises_with_the_dataset_statistics():
  images = np.random.RandomState(0).randint(0, 256, (4, 8, 8, 3)).astype(np.uint8)
  mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
  out = placement.preprocess(images, mean=mean, std=std)
  assert out.dtype == np.float32
  np.testing.assert_allclose(np.asarray(out), (images / 255 - mean) / std, rtol=1e-5,
                             atol=1e-5)
  key = jax.random.key(0)
  augmented = placement.preprocess(images, mean=mean, std=std, augment_key=key)
  assert not np.array_equal(np.asarray(out), np.asarray(augmented))
  # Example r depends on (key, r) only: the rows of a device equal the same
  # rows of the whole batch.
  part = placement.preprocess(images[2:], mean=mean, std=std, augment_key=key, first_row=2)
  np.testing.assert_array_equal(np.asarray(part), np.asarray(augmented)[2:])


def _crop_flip_stats(images):
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


def test_host_and_in_step_cifar_augmentation_follow_the_same_rule():
  pos = np.zeros((12, 12, 3), np.uint8)
  pos[..., 0] = np.arange(12)[:, None] + 1
  pos[..., 1] = np.arange(12)[None, :] + 1
  pos[..., 2] = 1
  n = 2700
  rng = np.random.default_rng(0)
  host = np.stack([transforms.cifar_train(pos, rng) for _ in range(n)])
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(7), i))(np.arange(n))
  device = np.asarray(placement.crop_flip(np.repeat(pos[None], n, 0), keys))
  for images in (host, device):
    stats = _crop_flip_stats(images)
    for axis in (0, 1):
      counts = np.bincount(stats[:, axis], minlength=9)
      assert len(counts) == 9  # Offsets in [0, 8] only.
      assert (np.abs(counts / n - 1 / 9) < 0.03).all(), counts
    assert abs(stats[:, 2].mean() - 0.5) < 0.04


def test_imagenet_transforms_on_jpegs(tmp_path):
  src = tmp_path / 'photos'
  for split, n in (('train', 6), ('validation', 3)):
    for i in range(n):
      img = np.full((48, 64, 3), (200, 30, 30), np.uint8)  # Red border ...
      img[3:-3, 3:-3] = (20, 40, 220)  # ... around a blue centre.
      path = src / split / CLASSES[i % 2] / f'{i}.jpg'
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(img).save(path, quality=95)
  inputs = ids_input((f'folder:{src}', str(tmp_path / 'data'), None), augment='imagenet',
                     image_size=24, batch_size=6, eval_batch_size=3)
  assert inputs.meta.image_shape == (24, 24, 3) and inputs.meta.eval_split == 'validation'
  mesh = parallel.make_mesh()
  assert take(inputs.train_batches(mesh), 1)[0]['image'].shape == (6, 24, 24, 3)
  evals = list(inputs.eval_batches(mesh))
  assert len(evals) == 1 and np.asarray(evals[0]['mask']).all()
  # The centre 224/256 of the shorter side excludes the 3-pixel border.
  eval_images = np.asarray(evals[0]['image']).astype(int)
  blue, red = np.array((20, 40, 220)), np.array((200, 30, 30))
  assert np.abs(eval_images[:, 4:-4, 4:-4] - blue).max() < 12
  assert (np.linalg.norm(eval_images - blue, axis=-1)
          < np.linalg.norm(eval_images - red, axis=-1)).all()


def test_transforms_equal_torchvisions_bit_for_bit():
  """Resize + CenterCrop (eval) and resized_crop (training) of JPEGs, as torchvision.

  The fixture holds two JPEGs and the SHA-256 of torchvision's outputs
  (experiments/pretrained_parity.py --part=preprocess, which also compares 25
  images and reports the differences: none).
  """
  import hashlib
  fixture = np.load(os.path.join(ROOT, 'tests', 'fixtures', 'transforms', 'torchvision.npz'))
  digest = lambda a: hashlib.sha256(np.ascontiguousarray(a, np.uint8).tobytes()).digest()
  for i in range(2):
    jpeg = fixture[f'jpeg_{i}'].tobytes()
    for resize in (256, 232):
      ours = transforms.eval_image(transforms.decode(jpeg), 224, resize)
      assert digest(ours) == fixture[f'eval{resize}_{i}'].tobytes(), (i, resize)
    for k in range(2):
      box = tuple(int(v) for v in fixture[f'crop_box_{i}_{k}'])
      ours = np.asarray(transforms.resized_crop(transforms.decode(jpeg), box, 224))
      assert digest(ours) == fixture[f'crop_{i}_{k}'].tobytes(), (i, k)


def test_torchvision_centre_crop_rounds_as_torchvision():
  """No resampling when the shorter side is already 256: the crop offsets alone."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (256, 341, 3), dtype=np.uint8)
  # torchvision: top = round(32 / 2) = 16, left = round(117 / 2) = round(58.5) = 58.
  np.testing.assert_array_equal(
      transforms.eval_image(Image.fromarray(image), 224, 256), image[16:240, 58:282])
  tall = rng.integers(0, 256, (343, 256, 3), dtype=np.uint8)
  np.testing.assert_array_equal(  # round(59.5) = 60.
      transforms.eval_image(Image.fromarray(tall), 224, 256), tall[60:284, 16:240])


def test_random_resized_crop_box_follows_torchvisions_rule():
  rng = np.random.default_rng(0)
  boxes = np.array([transforms.random_resized_crop_box(500, 375, rng) for _ in range(3000)])
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all() and (top + h <= 375).all() and (
      left + w <= 500).all()
  area = h * w / (500 * 375)
  aspect = w / h
  assert area.min() >= 0.075 and area.max() <= 1 and (aspect > 0.7).all() and (
      aspect < 1.4).all()
  # No box in 10 attempts: torchvision's centre crop at the nearest allowed ratio.
  assert transforms.random_resized_crop_box(1000, 10, rng) == (0, 493, 10, 13)


# --- fake data, TensorFlow, the benchmark ------------------------------------------------

def test_fake_data():
  inputs = data.open_input(data.resolve(make_config(
      dataset='fake', image_size=16, num_classes=10, batch_size=8, eval_batch_size=5000,
      augment='none')))
  meta = inputs.meta
  assert meta.num_classes == 10 and meta.image_shape == (16, 16, 3) and inputs.resident
  mesh = parallel.make_mesh()
  batches = take(inputs.train_batches(mesh), 5)
  assert batches[0]['image'].shape == (8, 16, 16, 3)
  resumed = take(inputs.train_batches(mesh, start_step=2), 1)[0]
  np.testing.assert_array_equal(resumed['image'], batches[2]['image'])
  masks = [np.asarray(b['mask']) for b in inputs.eval_batches(mesh)]
  assert sum(m.sum() for m in masks) == meta.num_eval
  default = data.open_input(data.resolve(make_config(dataset='fake'))).meta
  assert default.num_classes == 1000 and default.image_shape == (224, 224, 3)


def test_data_package_imports_no_tensorflow():
  """The loader's worker processes import resnet_jax.data: it must stay light."""
  code = ('import sys; import resnet_jax.data, resnet_jax.data.folder\n'
          "print([m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules])")
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.stdout.strip() == '[]', out.stdout + out.stderr[-2000:]


def test_pipeline_benchmark_prints_json_lines():
  out = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.pipeline_benchmark', '--only=imagenet_train,cifar',
       '--imagenet_images=16', '--batch_size=4', '--images=8', '--warmup_batches=1',
       '--rounds=1', '--workers=0'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in out.stdout.strip().splitlines()]
  summary = {r['benchmark']: r for r in rows if r.get('summary')}
  assert set(summary) == {'imagenet_train', 'cifar'}
  assert all(r['images_per_sec'] > 0 and r['variant'] == 'resnet_jax/0'
             for r in summary.values())
