"""The tf.data host pipeline: this process's shard, shuffled, augmented, batched.

Train: epoch e reads this process's equal-sized shard of the train split
(`tfds.split_for_jax_process`, remainder dropped), shuffles it with a seed made
from (config.seed, e), augments each example with stateless randomness keyed
by (seed, e, position) and batches it as uint8 [per_process, ...] (the
process's share of each global batch; `devices.prefetch_to_mesh` turns it into
global arrays). Every epoch is built from its own seeds, so resuming at step s builds
epoch s // steps_per_epoch and skips s % steps_per_epoch batches (before the
augmentation, so skipped examples cost only their reading) and yields the
batches an uninterrupted run would.

Eval: this process's shard of the eval split (`tfds.even_splits`, no
remainder dropped, so every example is on exactly one process), padded with
masked examples to the same number of batches on every process.
"""

import functools
from typing import Iterator

from resnet_jax import parallel
from resnet_jax.data import devices
from resnet_jax.data import meta as meta_lib
from resnet_jax.data import sources

# Cached (config.cache='memory') datasets live as long as the process, so a
# second iterator (the next evaluation, a restarted train iterator) reuses them.
_MEMO = {}


@functools.cache
def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # The host pipeline runs on CPU; keep TF off the accelerators JAX uses.
  tf.config.set_visible_devices([], 'GPU')
  return tf


class _Reader:
  """Reads and preprocesses one split of a prepared builder."""

  def __init__(self, config, meta: meta_lib.DatasetMeta):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from resnet_jax.data import tf_augment  # pylint: disable=g-import-not-at-top
    self.tf = _tf()
    self.tfds = tfds
    self.aug = tf_augment
    self.config = config
    self.meta = meta
    self.builder = sources.prepared_builder(config, allow_download=False)
    native_hw, _, encoding = sources.image_info(self.builder)
    # Static where the dataset's images all have one size: resizing is skipped.
    self.decoded_shape = (*native_hw, 3) if None not in native_hw else (None, None, 3)
    self.size = meta.image_shape[0]
    self.is_jpeg = encoding == 'jpeg'
    # 'imagenet' decodes inside the augmentation (only the crop of a JPEG).
    self.raw_bytes = config.augment == 'imagenet'

  def read(self, split, *, files_seed: int | None = None):
    """{'image', 'label'} examples of `split`, files shuffled when seeded."""
    tf, tfds = self.tf, self.tfds
    read_config = tfds.ReadConfig(
        try_autocache=False,  # Caching is config.cache's decision.
        shuffle_seed=files_seed,
        add_tfds_id=False)
    # Our own decode, not tfds': JPEGs as PIL decodes them (tf_augment.decode).
    ds = self.builder.as_dataset(split=split, shuffle_files=files_seed is not None,
                                 decoders={'image': tfds.decode.SkipDecoding()},
                                 read_config=read_config)
    # 'imagenet' decodes inside the augmentation (only the crop of a JPEG).
    decode = (lambda x: x) if self.raw_bytes else (
        lambda x: tf.ensure_shape(self.aug.decode(x), self.decoded_shape))
    return ds.map(lambda ex: {'image': decode(ex['image']),
                              'label': tf.cast(ex['label'], tf.int32)},
                  num_parallel_calls=tf.data.AUTOTUNE)

  def train_example(self, ex, seed):
    aug, config = self.aug, self.config
    if config.augment == 'imagenet':
      image = aug.imagenet_train(ex['image'], seed, self.size, self.is_jpeg)
    else:
      image = aug.resize(ex['image'], self.size)
      if config.augment == 'cifar':
        image = aug.cifar_train(image, seed)
    return {'image': image, 'label': ex['label']}

  def eval_example(self, ex):
    aug = self.aug
    if self.config.augment == 'imagenet':
      image = aug.imagenet_eval(ex['image'], self.size, self.is_jpeg,
                                self.config.eval_resize)
    else:
      image = aug.resize(ex['image'], self.size)
    return {'image': image, 'label': ex['label']}


def _train_epoch(reader: _Reader, layout: parallel.BatchLayout, split,
                 epoch: int, skip_batches: int):
  tf, config = reader.tf, reader.config
  seed = functools.partial(devices.epoch_seed, config.seed, epoch)
  if config.cache == 'memory':
    key = ('train', str(reader.builder.data_dir), str(split), config.augment, reader.size)
    if key not in _MEMO:
      _MEMO[key] = reader.read(split).cache()
    ds = _MEMO[key]
  else:
    ds = reader.read(split, files_seed=seed(devices.FILES))
  ds = ds.shuffle(config.shuffle_buffer_size, seed=seed(devices.SHUFFLE),
                  reshuffle_each_iteration=False)
  ds = ds.enumerate()
  # Skip before augmenting: a resumed epoch only re-reads what it skips.
  ds = ds.skip(skip_batches * layout.per_process)
  aug_seed = tf.constant([seed(devices.AUGMENT), parallel.process_index()], tf.int64)

  def augment(i, ex):
    return reader.train_example(
        ex, tf.random.experimental.stateless_fold_in(aug_seed, i))

  ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  # drop_remainder still reads the tail, so a memory cache gets completed.
  ds = ds.batch(layout.per_process, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def train_batches(config, meta: meta_lib.DatasetMeta, *,
                  start_step: int = 0) -> Iterator[dict]:
  """This process's host numpy batches {'image': uint8, 'label': int32}, endless.

  Each batch holds the process's `per_process` examples of one global step.
  """
  layout = parallel.train_layout(config)
  reader = _Reader(config, meta)
  split = reader.tfds.split_for_jax_process(
      meta.train_split, process_index=parallel.process_index(),
      process_count=parallel.process_count(), drop_remainder=True)
  steps = meta_lib.steps_per_epoch(config, meta)
  epoch, skip = divmod(start_step, steps)
  while True:
    count = skip
    for batch in _train_epoch(reader, layout, split, epoch, skip).as_numpy_iterator():
      yield batch
      count += 1
    # Equal shards (remainder dropped) give every process the same count; a
    # mismatch means the prepared files do not hold what their info says.
    if count != steps:
      raise RuntimeError(
          f'epoch {epoch} of {meta.train_split!r} gave {count} batches instead '
          f'of {steps}: the prepared dataset in {reader.builder.data_dir} does '
          'not match its dataset_info.json; prepare it again')
    epoch, skip = epoch + 1, 0


def eval_batches(config, meta: meta_lib.DatasetMeta) -> Iterator[dict]:
  """Host numpy batches with 'mask'; the same number on every process."""
  layout = parallel.eval_layout(config)
  num_batches = devices.num_eval_batches(config, meta.num_eval, layout)
  reader = _Reader(config, meta)
  tf = reader.tf
  split = reader.tfds.even_splits(meta.eval_split, n=parallel.process_count(),
                                  drop_remainder=False)[parallel.process_index()]
  limit = num_batches * layout.per_process
  key = ('eval', str(reader.builder.data_dir), str(split), config.augment, reader.size, limit)
  ds = _MEMO.get(key)
  if ds is None:
    ds = reader.read(split).take(limit)
    ds = ds.map(reader.eval_example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda ex: {**ex, 'mask': tf.constant(True)})
    if config.cache == 'memory' and config.augment != 'imagenet':
      ds = ds.cache()
      _MEMO[key] = ds
  padding = tf.data.Dataset.from_tensors(tf.nest.map_structure(
      lambda spec: tf.zeros(spec.shape, spec.dtype), ds.element_spec)).repeat()
  ds = ds.concatenate(padding).take(limit)
  ds = ds.batch(layout.per_process)
  yield from ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
