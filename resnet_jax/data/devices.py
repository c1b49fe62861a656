"""Getting batches onto the mesh, and the bookkeeping every input path shares.

Every input path (tf.data, on-device, fake) splits the GLOBAL `config.batch_size`
the same way (`parallel.batch_layout`): each process produces its own
`per_process` examples, and `parallel.shard_batch` assembles the processes'
shares into global arrays sharded over the mesh's data axes, which is what the
jitted steps take. Evaluation pads every process to the same number of batches.
"""

import collections
import itertools
import math
from typing import Any, Iterable, Iterator

import numpy as np

from resnet_jax import parallel


def num_eval_batches(config, num_eval: int, layout: parallel.BatchLayout) -> int:
  """Eval batches per process: enough for the largest process shard.

  Every process runs this many (the shorter shards pad with masked examples),
  so the collectives in the eval step never wait for a missing process.
  `config.num_eval_batches > 0` caps it.
  """
  largest_shard = math.ceil(num_eval / parallel.process_count())
  n = math.ceil(largest_shard / layout.per_process)
  if config.num_eval_batches > 0:
    n = min(n, config.num_eval_batches)
  return n


def epoch_seed(seed: int, epoch: int, purpose: int) -> int:
  """A 31-bit seed that depends on (seed, epoch, purpose) only.

  SeedSequence mixes the inputs so that neighbouring epochs and seeds give
  unrelated shuffles (seed + epoch would make run 1 epoch 0 equal run 0 epoch 1).
  """
  state = np.random.SeedSequence([seed, epoch, purpose]).generate_state(1)[0]
  return int(state) & 0x7FFFFFFF


# `purpose` tags for epoch_seed, so file order, shuffle and augmentation draw
# independent randomness.
SHUFFLE, AUGMENT, FILES = 1, 2, 3


def prefetch_to_mesh(batches: Iterable[Any], mesh, size: int) -> Iterator[Any]:
  """Host batches (this process's share) -> global arrays, `size` in flight.

  The transfers are asynchronous, so with size >= 1 the next batch travels
  to the devices while the current step runs.
  """
  queue = collections.deque()
  batches = iter(batches)

  def enqueue(n):
    for batch in itertools.islice(batches, n):
      queue.append(parallel.shard_batch(batch, mesh))

  enqueue(max(1, size))
  while queue:
    yield queue.popleft()
    enqueue(1)
