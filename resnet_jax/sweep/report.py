"""A sweep's results: per point and per group, as CSV and Markdown (plots: `plots`).

Reads only what the points left on disk (status.json, config.json,
metrics.jsonl), so a report works on a sweep still running, on one copied from
a cluster, and on one whose points partly failed (it says which).
"""

import csv
import dataclasses
import json
import math
import os
import statistics
from typing import Any, Sequence

from resnet_jax.errors import ConfigError
from resnet_jax.sweep import plots
from resnet_jax.sweep import state
from resnet_jax.sweep.grid import Point
from resnet_jax.sweep.grid import Sweep
from resnet_jax.sweep.grid import sort_key
from resnet_jax.sweep.grid import unique


@dataclasses.dataclass
class PointResult:
  """A point's final metrics and curves, read from its workdir."""
  point: Point
  state: str
  step: int | None = None
  top1_err: float = math.nan  # test error %, top-1
  top5_err: float = math.nan
  eval_loss: float = math.nan
  train_top1_err: float = math.nan  # over the last training log window
  train_loss: float = math.nan
  train_curve: tuple[list[int], list[float]] = ([], [])
  eval_curve: tuple[list[int], list[float]] = ([], [])
  config: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def has_eval(self) -> bool:
    return not math.isnan(self.top1_err)


def _err(top: Any) -> float:
  return 100.0 * (1.0 - state.number(top))


def collect(points: Sequence[Point], workdir: str) -> list[PointResult]:
  """Reads every point's status, config.json and metrics.jsonl."""
  results = []
  for p in points:
    point_dir = os.path.join(workdir, p.name)
    status = state.read_status(point_dir) or {}
    rows = state.read_metrics(point_dir)
    point_state = status.get('state') or ('not run' if not rows else 'unknown')
    result = PointResult(p, point_state)
    config_path = os.path.join(point_dir, 'config.json')
    if os.path.isfile(config_path):
      with open(config_path, encoding='utf-8') as f:
        result.config = json.load(f)
    train = state.by_step(rows, 'train_top1')
    evals = state.by_step(rows, 'eval_top1')
    if train:
      last = train[max(train)]
      result.train_top1_err = _err(last['train_top1'])
      result.train_loss = state.number(last.get('train_loss'))
      result.train_curve = (list(train), [_err(r['train_top1']) for r in train.values()])
    if evals:
      # The final eval when finished; else the latest one (marked in the report).
      step = status.get('final_step') if point_state == 'done' else None
      last = evals.get(step) if step in evals else evals[max(evals)]
      result.step = int(last['step'])
      result.top1_err = _err(last['eval_top1'])
      result.top5_err = _err(last['eval_top5']) if 'eval_top5' in last else math.nan
      result.eval_loss = state.number(last.get('eval_loss'))
      result.eval_curve = (list(evals), [_err(r['eval_top1']) for r in evals.values()])
    results.append(result)
  return results


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return math.nan, math.nan
  std = statistics.stdev(values) if len(values) > 1 else math.nan
  return statistics.fmean(values), std


@dataclasses.dataclass
class GroupResult:
  """Mean and std over the points of a group (its `average_over` values)."""
  group: str
  tags: dict[str, Any]
  results: list[PointResult]
  paper: dict[str, float]

  @property
  def finished(self) -> list[PointResult]:
    return [r for r in self.results if r.has_eval]

  @property
  def complete(self) -> bool:
    return all(r.state == 'done' for r in self.results)

  def stat(self, attr: str) -> tuple[float, float]:
    return _mean_std([getattr(r, attr) for r in self.finished])


PARTIAL_NOTE = '† not all of its points finished: the latest eval is shown.'


def _partial(g: GroupResult) -> bool:
  """Whether a group shows a number although not all its points are done."""
  return bool(g.finished) and not g.complete


def group_results(sweep: Sweep, results: Sequence[PointResult]) -> list[GroupResult]:
  """The results by group, in the order groups first appear."""
  groups: dict[str, GroupResult] = {}
  for r in results:
    g = r.point.group
    if g not in groups:
      tags = {k: v for k, v in r.point.tags.items() if k != sweep.average_over}
      groups[g] = GroupResult(g, tags, [], dict(sweep.paper_results.get(g, {})))
    groups[g].results.append(r)
  return list(groups.values())


def fmt(value: float, digits: int = 2) -> str:
  return '' if value is None or math.isnan(value) else f'{value:.{digits}f}'


def fmt_mean_std(mean: float, std: float) -> str:
  if math.isnan(mean):
    return '–'
  return f'{mean:.2f} ± {std:.2f}' if not math.isnan(std) else f'{mean:.2f}'


def write_points_csv(path: str, sweep: Sweep, results: Sequence[PointResult]) -> None:
  tag_keys = sweep.tag_keys()
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['point', 'group', *tag_keys, 'state', 'step', 'test_err_top1',
                'test_err_top5', 'eval_loss', 'train_err_top1', 'train_loss',
                'paper_top1_err', 'paper_top5_err', 'dataset', 'batch_size'])
    for r in results:
      paper = sweep.paper_results.get(r.point.group, {})
      w.writerow([r.point.name, r.point.group,
                  *[r.point.tags.get(k, '') for k in tag_keys], r.state,
                  '' if r.step is None else r.step, fmt(r.top1_err, 4),
                  fmt(r.top5_err, 4), fmt(r.eval_loss, 4), fmt(r.train_top1_err, 4),
                  fmt(r.train_loss, 4), paper.get('top1_err', ''),
                  paper.get('top5_err', ''), r.config.get('dataset', ''),
                  r.config.get('batch_size', '')])


def write_summary_csv(path: str, sweep: Sweep, groups: Sequence[GroupResult]) -> None:
  tag_keys = sweep.group_keys()
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['group', *tag_keys, 'n', 'complete', 'test_err_top1_mean',
                'test_err_top1_std', 'test_err_top5_mean', 'test_err_top5_std',
                'train_err_top1_mean', 'paper_top1_err', 'paper_top5_err'])
    for g in groups:
      t1, t5, tr = g.stat('top1_err'), g.stat('top5_err'), g.stat('train_top1_err')
      w.writerow([g.group, *[g.tags.get(k, '') for k in tag_keys], len(g.finished),
                  g.complete, fmt(t1[0], 4), fmt(t1[1], 4), fmt(t5[0], 4),
                  fmt(t5[1], 4), fmt(tr[0], 4), g.paper.get('top1_err', ''),
                  g.paper.get('top5_err', '')])


def _setting(results: Sequence[PointResult], key: str) -> str:
  """A config value shared by the points, or 'varies'."""
  values = {json.dumps(r.config.get(key), default=str) for r in results if r.config}
  if not values:
    return '?'
  return json.loads(values.pop()) if len(values) == 1 else 'varies'


def markdown_report(sweep: Sweep, groups: Sequence[GroupResult],
                    results: Sequence[PointResult], *, sweep_spec: str,
                    workdir: str) -> str:
  """The report as Markdown: settings, an x by series pivot, every group."""
  done = sum(r.state == 'done' for r in results)
  steps = sorted({r.step for r in results if r.step is not None})
  over = f'over {sweep.average_over}s' if sweep.average_over else 'over each group'
  lines = [f'# {sweep.name}: results', '']
  if sweep.description:
    lines += [sweep.description, '']
  lines += [
      f'- Sweep: `{sweep_spec}`, workdir `{workdir}`; {done} of {len(results)} points '
      'finished.',
      f'- Dataset: `{_setting(results, "dataset")}`; batch {_setting(results, "batch_size")}; '
      f'optimizer {_setting(results, "optimizer")}, lr {_setting(results, "learning_rate")} '
      f'({_setting(results, "schedule")}); steps: {", ".join(map(str, steps)) or "–"}.',
      f'- Test error = 100 − top-1 accuracy (%), mean ± std {over} at the final eval; '
      'train error over the last logged training window (augmented batches).',
      '']
  lines += _pivot_markdown(sweep, groups)
  tag_cols = sweep.group_keys()
  header = ['group', *tag_cols, f'{sweep.average_over}s' if sweep.average_over else 'points']
  for m in sweep.metrics:
    header += [f'test err % ({m})', f'paper % ({m})']
  header.append('train err %')
  lines += ['## All groups', '', '| ' + ' | '.join(header) + ' |',
            '|' + '---|' * len(header)]
  any_partial = False
  for g in groups:
    mark = ''
    if _partial(g):
      mark, any_partial = ' †', True
    row = [g.group + mark, *[str(g.tags.get(k, '')) for k in tag_cols],
           str(len(g.finished))]
    # A group without results says why: not run, failed, running...
    missing = '– (' + ', '.join(unique(r.state for r in g.results)) + ')'
    for m in sweep.metrics:
      ours = fmt_mean_std(*g.stat(f'{m}_err')) if g.finished else missing
      row += [ours, fmt(g.paper.get(f'{m}_err', math.nan))]
    row.append(fmt_mean_std(*g.stat('train_top1_err')))
    lines.append('| ' + ' | '.join(row) + ' |')
  lines.append('')
  if any_partial:
    lines += [PARTIAL_NOTE, '']
  if sweep.notes:
    lines += ['## Notes', '', sweep.notes.strip(), '']
  return '\n'.join(lines)


def _pivot_markdown(sweep: Sweep, groups: Sequence[GroupResult]) -> list[str]:
  """Test error with x values as rows and series values as columns (the paper's view)."""
  if not (sweep.x and sweep.series and
          all(sweep.x in g.tags and sweep.series in g.tags for g in groups)):
    return []
  xs = sorted(unique(g.tags[sweep.x] for g in groups), key=sort_key)
  series = unique(g.tags[sweep.series] for g in groups)
  cell = {(g.tags[sweep.x], g.tags[sweep.series]): g for g in groups}
  with_paper = [s for s in series
                if any('top1_err' in g.paper for g in groups if g.tags[sweep.series] == s)]
  header = [sweep.x]
  for s in series:
    header.append(sweep.label(s))
    if s in with_paper:
      header.append(f'paper {sweep.label(s)}')
  lines = [f'## Test error % (top-1) by {sweep.x} and {sweep.series}', '',
           '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  any_partial = False
  for x in xs:
    row = [str(x)]
    for s in series:
      g = cell.get((x, s))
      value = fmt_mean_std(*g.stat('top1_err')) if g else ''
      if g and _partial(g):
        value, any_partial = value + ' †', True
      row.append(value)
      if s in with_paper:
        row.append(fmt(g.paper.get('top1_err', math.nan)) if g else '')
    lines.append('| ' + ' | '.join(row) + ' |')
  return lines + [''] + ([PARTIAL_NOTE, ''] if any_partial else [])


def write_report(sweep: Sweep, points: Sequence[Point], workdir: str, out: str, *,
                 sweep_spec: str) -> dict[str, str]:
  """Writes points.csv, summary.csv, results.md and the PNGs; returns name -> path."""
  results = collect(points, workdir)
  if not any(r.has_eval or r.train_curve[0] for r in results):
    raise ConfigError(f'no point under {workdir} has metrics yet; run the sweep first '
                      f'(python -m resnet_jax.sweep run {sweep_spec} --workdir={workdir})')
  groups = group_results(sweep, results)
  os.makedirs(out, exist_ok=True)
  files = {'points.csv': os.path.join(out, 'points.csv'),
           'summary.csv': os.path.join(out, 'summary.csv'),
           'results.md': os.path.join(out, 'results.md')}
  write_points_csv(files['points.csv'], sweep, results)
  write_summary_csv(files['summary.csv'], sweep, groups)
  with open(files['results.md'], 'w', encoding='utf-8') as f:
    f.write(markdown_report(sweep, groups, results, sweep_spec=sweep_spec,
                            workdir=workdir))
  if sweep.x:
    name = f'error_vs_{sweep.x}.png'
    if plots.plot_error_vs_x(os.path.join(out, name), sweep, groups):
      files[name] = os.path.join(out, name)
  if plots.plot_curves(os.path.join(out, 'curves.png'), sweep, results):
    files['curves.png'] = os.path.join(out, 'curves.png')
  return files
