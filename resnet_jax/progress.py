"""What the training loop reports while it runs, and when it acts.

- `itstime(step, every, ...)`: whether a periodic action (log, evaluate,
  checkpoint) is due at `step` (as big_vision's `u.itstime`): every `every`
  steps, one epoch when `every` is -1, and always at the last step.
- `TrainLog`: the step metrics stay on the devices until a logging step,
  where they are fetched in one transfer, checked for a non-finite loss,
  averaged and written (metrics.jsonl, TensorBoard, the progress bar).
"""

import math
import sys
import time
from typing import Any, Mapping

from absl import logging
import numpy as np
import tqdm

from resnet_jax import parallel
from resnet_jax.errors import NonFiniteLossError


def period(every: int, steps_per_epoch: int) -> int:
  """A period in steps: `every`, or one epoch when it is -1."""
  return every if every > 0 else max(1, steps_per_epoch)


def itstime(step: int, every: int, *, total: int, steps_per_epoch: int) -> bool:
  """True when an action with period `every` (-1: each epoch) is due at `step`.

  Steps count from 1 (the step just taken); the last step always qualifies,
  so every run ends with a log line, an evaluation and a checkpoint.
  """
  return step % period(every, steps_per_epoch) == 0 or step == total


class TrainLog:
  """Buffers the train step's device metrics; fetches and writes them on `flush`.

  Args:
    writer: a `metric_writers.MetricWriter`.
    total: num_train_steps (for the progress bar).
    start_step: the step the run starts from (a resumed run's checkpoint).
    batch_size: global batch, for images/s.
    steps_per_epoch: for the 'epoch' value.
    enabled: show the progress bar (process 0 only).
  """

  def __init__(self, writer, *, total: int, start_step: int, batch_size: int,
               steps_per_epoch: int, enabled: bool = True):
    self._writer = writer
    self._batch_size = batch_size
    self._steps_per_epoch = steps_per_epoch
    self._pending: list[tuple[int, Any]] = []
    self._last_step = start_step
    self._last_time = None  # The clock starts at the first flush (after compile).
    self._bar = tqdm.tqdm(total=total, initial=start_step, disable=not enabled,
                          unit='step', dynamic_ncols=True, file=sys.stderr)

  def append(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Keeps the (device-side) metrics of `step`; no host sync."""
    self._pending.append((step, metrics))

  def flush(self, step: int) -> dict[str, float]:
    """Fetches the buffered metrics, writes their mean; returns it ({} if none).

    Raises:
      NonFiniteLossError: a buffered step's loss is NaN or infinite (before
        anything is written or checkpointed).
    """
    if not self._pending:
      return {}
    steps = [s for s, _ in self._pending]
    fetched = parallel.to_host([m for _, m in self._pending])
    self._pending = []
    now = time.perf_counter()
    for s, m in zip(steps, fetched):
      loss = float(m['train_loss'])
      if not math.isfinite(loss):
        # What to change and what is kept depend on the run: the loop adds them.
        raise NonFiniteLossError(f'training loss became {loss} at step {s}')
    summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    summary['lr'] = float(fetched[-1]['lr'])
    summary['epoch'] = step / self._steps_per_epoch
    if self._last_time is not None:
      elapsed = now - self._last_time
      summary['images_per_sec'] = (step - self._last_step) * self._batch_size / elapsed
      summary['step_time_ms'] = 1000 * elapsed / (step - self._last_step)
    self._writer.write(step, summary)
    self._bar.update(step - self._bar.n)
    self._bar.set_postfix(loss=f"{summary['train_loss']:.3f}",
                          top1=f"{summary['train_top1']:.3f}")
    self._last_step, self._last_time = step, now
    return summary

  def write_eval(self, step: int, metrics: Mapping[str, float]) -> None:
    """Writes eval metrics; the time they took is kept out of images/s."""
    self._writer.write(step, metrics)
    logging.info('step %d: eval top-1 %.4f, loss %.4f', step, metrics['eval_top1'],
                 metrics['eval_loss'])
    if self._last_time is not None:
      self._last_time = time.perf_counter()

  def close(self) -> None:
    self._bar.close()
