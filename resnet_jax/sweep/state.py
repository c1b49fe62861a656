"""A point's state on disk: `status.json`, its log, its metrics, "finished".

Each point runs in `WORKDIR/POINT/`: main's workdir (config.json,
metrics.jsonl, checkpoints/) plus `log.txt` (the process output, one `===`
header per attempt) and `status.json` (written by the runner). Everything the
runner, `list` and `report` know about a point is read from there.
"""

import datetime
import json
import math
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from resnet_jax import metric_writers
from resnet_jax.errors import ConfigError
from resnet_jax.sweep.grid import Point

STATUS_FILE = 'status.json'
LOG_FILE = 'log.txt'
METRICS_FILE = 'metrics.jsonl'
LOG_TAIL_LINES = 20


def now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec='seconds')


def read_status(point_dir: str) -> dict[str, Any] | None:
  path = os.path.join(point_dir, STATUS_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None  # A torn write from a killed runner: treat as never run.


def write_status(point_dir: str, status: Mapping[str, Any]) -> None:
  """Writes status.json atomically, so a killed runner never leaves half a file."""
  path = os.path.join(point_dir, STATUS_FILE)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(status, f, indent=2, sort_keys=True, default=str)
    f.write('\n')
  os.replace(tmp, path)


def read_metrics(point_dir: str) -> list[dict[str, Any]]:
  """The point's metrics.jsonl rows ([] before its first log)."""
  path = os.path.join(point_dir, METRICS_FILE)
  return metric_writers.read_jsonl(path) if os.path.isfile(path) else []


def number(value: Any) -> float:
  """A metric value as float (NaN when missing)."""
  return math.nan if value is None else float(value)


def by_step(rows: Iterable[Mapping[str, Any]], key: str) -> dict[int, dict[str, Any]]:
  """Rows that have `key`, by step; the last one wins (a resumed run re-logs steps)."""
  out = {}
  for row in rows:
    if key in row and 'step' in row:
      out[int(row['step'])] = dict(row)
  return dict(sorted(out.items()))


def final_eval(rows: Sequence[Mapping[str, Any]],
               final_step: int | None = None) -> dict[str, Any] | None:
  """The eval row at `final_step` (default: the last step logged), or None."""
  evals = by_step(rows, 'eval_top1')
  if final_step is None:
    steps = [int(r['step']) for r in rows if 'step' in r]
    if not steps:
      return None
    final_step = max(steps)
  return evals.get(final_step)


def expected_steps(config) -> int | None:
  """The run's length when the config states it in steps (else it needs the dataset)."""
  steps = config.get('num_train_steps', -1)
  return int(steps) if steps and steps > 0 else None


def is_finished(point_dir: str, point: Point) -> bool:
  """True when a previous run of this very point exited 0 with a final eval."""
  status = read_status(point_dir)
  if not status or status.get('state') != 'done' or status.get('spec') != point.spec():
    return False
  return final_eval(read_metrics(point_dir), status.get('final_step')) is not None


def check_workdir_matches(point_dir: str, point: Point) -> None:
  """Refuses to resume or skip a point whose workdir holds a different config."""
  status = read_status(point_dir)
  if status and 'spec' in status and status['spec'] != point.spec():
    raise ConfigError(
        f'{point_dir} holds a run of a different config ({_spec_text(status["spec"])}; '
        f'now {_spec_text(point.spec())}): use another --workdir or remove that folder')


def _spec_text(spec: Mapping[str, Any]) -> str:
  overrides = ' '.join(f'{k}={v}' for k, v in sorted(spec.get('overrides', {}).items()))
  return f'{spec.get("config")} {overrides}'.strip()


def _clean_log_line(line: str) -> str:
  # tqdm redraws with carriage returns: keep what a terminal would show.
  return line.rstrip('\n').split('\r')[-1].rstrip()


def log_tail(point_dir: str, n: int = LOG_TAIL_LINES, offset: int = 0) -> list[str]:
  """The last `n` non-empty lines of the point's log after byte `offset`."""
  path = os.path.join(point_dir, LOG_FILE)
  if not os.path.isfile(path):
    return []
  # newline='\n': a progress bar's '\r' redraws stay on their line, not one each.
  with open(path, encoding='utf-8', errors='replace', newline='\n') as f:
    f.seek(offset)
    lines = [_clean_log_line(l) for l in f.readlines()[-4 * n:]]
  return [l for l in lines if l][-n:]


def failure_reason(tail: Sequence[str]) -> str:
  """The most telling line of a failed run's log: its error line, else the last one."""
  for line in reversed(tail):
    line = line.strip()  # Chained tracebacks indent the inner error.
    if line.startswith('error:') or re.match(r'^[\w.]*(Error|Exception)\b', line):
      return line
  return tail[-1] if tail else 'no output'
