"""Where metrics go: `metrics.jsonl`, TensorBoard event files and the console.

Only process 0 writes; other processes get a writer that does nothing, so the
training loop never has to ask which process it is on. `read_jsonl` is the one
reader of `metrics.jsonl` (reports, sweeps, tests).
"""

import json
import math
import os
import sys
import time
import types
from typing import Any, Mapping

from absl import logging


class MetricWriter:
  """Writes flat scalar dicts to `WORKDIR/metrics.jsonl` and TensorBoard.

  One JSON object per logging event: {"step": 100, "train_loss": ..., ...}.
  TensorBoard events go to `WORKDIR/tensorboard/` through tensorboard's own
  event-file writer (no TensorFlow needed where tensorboard runs without it).
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self._enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, 'metrics.jsonl')
    # Append: a resumed run continues the same file.
    self._jsonl = open(path, 'a', encoding='utf-8')
    if _ends_torn(path):
      # A killed run left half a line: end it, so the next row is not glued to it.
      self._jsonl.write('\n')
    if tensorboard:
      # tensorboard writes its event files with TensorFlow's file API when
      # TensorFlow is installed; this marker module (tensorboard's own
      # "no_tensorflow" switch) makes it use its stub, keeping TensorFlow out
      # of the training process.
      sys.modules.setdefault('tensorboard.compat.notf', types.ModuleType('notf'))
      try:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter  # pylint: disable=g-import-not-at-top
        self._tb = EventFileWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:
        logging.warning('tensorboard is not installed: writing metrics.jsonl only.')

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes one event of scalar metrics at `step`."""
    if not self._enabled:
      return
    row = {'step': int(step)}
    for k, v in scalars.items():
      v = float(v)
      # JSON has no NaN/Inf; keep the line parseable by strict readers.
      row[k] = v if math.isfinite(v) else str(v)
    self._jsonl.write(json.dumps(row) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
      values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                for k, v in scalars.items()]
      self._tb.add_event(event_pb2.Event(
          wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _ends_torn(path: str) -> bool:
  """True when the file is not empty and its last line has no newline."""
  with open(path, 'rb') as f:
    f.seek(0, os.SEEK_END)
    if f.tell() == 0:
      return False
    f.seek(-1, os.SEEK_END)
    return f.read(1) != b'\n'


# How MetricWriter.write stores non-finite floats (JSON has none): str(float).
_NON_FINITE = {'nan': math.nan, 'inf': math.inf, '-inf': -math.inf}


def _decode(value: Any) -> Any:
  if isinstance(value, str) and value in _NON_FINITE:
    return _NON_FINITE[value]
  return value


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads a metrics.jsonl file back into a list of dicts, the one reader of it.

  The inverse of `MetricWriter.write`: values it stored as 'nan', 'inf' and
  '-inf' come back as floats. A line that is not a JSON object is skipped: the
  writer only ever writes whole lines, so such a line is the torn end of a
  process killed while writing (kill -9, a preemption), not data.

  Args:
    path: the file.

  Returns:
    One dict per event, in file order ({'step': int, name: float, ...}).

  Raises:
    OSError: the file cannot be read (e.g. it does not exist).
  """
  rows = []
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict):
        rows.append({k: _decode(v) for k, v in row.items()})
  return rows
