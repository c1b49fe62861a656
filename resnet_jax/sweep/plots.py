"""The report's PNG plots: test error vs `x` per series, and error curves (Fig. 6).

matplotlib is imported only here, when a report is written (`pip install
matplotlib`, or the `plots` extra); the rest of the sweep runs without it.
"""

import math
from typing import Any, Mapping, Sequence

from resnet_jax.errors import ConfigError
from resnet_jax.sweep.grid import Sweep
from resnet_jax.sweep.grid import sort_key
from resnet_jax.sweep.grid import unique


def _series_of(sweep: Sweep, tags: Mapping[str, Any]):
  """The point's series value; '' for every point when the sweep has no series."""
  return tags.get(sweep.series, '') if sweep.series else ''


def plot_error_vs_x(path: str, sweep: Sweep, groups: Sequence[Any]) -> bool:
  """Test error vs `sweep.x`, one line per series (the paper's numbers dashed).

  Args:
    path: the PNG to write.
    sweep: the sweep (its x, series and labels).
    groups: `report.GroupResult`s.

  Returns:
    False (and no file) when the groups lack the x or series tags.
  """
  if not sweep.x or not all(sweep.x in g.tags for g in groups):
    return False
  if sweep.series and not all(sweep.series in g.tags for g in groups):
    return False
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for i, s in enumerate(unique(_series_of(sweep, g.tags) for g in groups)):
    color = colors[i % len(colors)]
    label = sweep.label(s) if sweep.series else 'ours'
    in_series = sorted((g for g in groups if _series_of(sweep, g.tags) == s),
                       key=lambda g: sort_key(g.tags[sweep.x]))
    mine = [g for g in in_series if g.finished]
    if mine:
      stats = [g.stat('top1_err') for g in mine]
      ax.errorbar([g.tags[sweep.x] for g in mine], [m for m, _ in stats],
                  yerr=[0 if math.isnan(sd) else sd for _, sd in stats], marker='o',
                  color=color, capsize=3, label=label)
    paper = [g for g in in_series if 'top1_err' in g.paper]
    if paper:
      ax.plot([g.tags[sweep.x] for g in paper], [g.paper['top1_err'] for g in paper],
              linestyle='--', marker='s', markerfacecolor='none', color=color,
              label=f'{label} (paper)')
  xs = unique(g.tags[sweep.x] for g in groups)
  if all(isinstance(x, (int, float)) for x in xs):
    ax.set_xticks(sorted(xs))
  # Ours first, then the paper's, in series order (matplotlib lists error bars last).
  handles, labels = ax.get_legend_handles_labels()
  order = sorted(range(len(labels)), key=lambda i: (labels[i].endswith('(paper)'), i))
  ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize='small')
  ax.set_xlabel(sweep.x)
  ax.set_ylabel('test error (%)')
  ax.set_title(f'{sweep.name}: test error vs {sweep.x}')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def plot_curves(path: str, sweep: Sweep, results: Sequence[Any]) -> bool:
  """Train (dashed) and test (solid) error vs step; one panel per series (Fig. 6).

  Args:
    path: the PNG to write.
    sweep: the sweep (its x, series and labels).
    results: `report.PointResult`s.

  Returns:
    False (and no file) when no point has a curve.
  """
  results = [r for r in results if r.train_curve[0] or r.eval_curve[0]]
  if not results:
    return False
  plt = _pyplot()
  by_series = sweep.series and all(sweep.series in r.point.tags for r in results)
  panels = (unique(r.point.tags[sweep.series] for r in results) if by_series else [None])
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8),
                           sharey=True, squeeze=False)
  colored_by = (sweep.x if sweep.x and all(sweep.x in r.point.tags for r in results)
                else None)
  keys = unique(r.point.tags[colored_by] if colored_by else r.point.group
                for r in results)
  cmap = plt.get_cmap('viridis')
  color = {k: cmap(i / max(1, len(keys) - 1) * 0.9) for i, k in enumerate(keys)}
  for ax, panel in zip(axes[0], panels):
    labelled = set()
    for r in results:
      if by_series and r.point.tags[sweep.series] != panel:
        continue
      key = r.point.tags[colored_by] if colored_by else r.point.group
      label = None if key in labelled else (f'{colored_by} {key}' if colored_by else key)
      labelled.add(key)
      if r.train_curve[0]:
        ax.plot(*r.train_curve, linestyle='--', linewidth=0.9, color=color[key],
                label=None if r.eval_curve[0] else label)
      if r.eval_curve[0]:
        ax.plot(*r.eval_curve, linestyle='-', linewidth=1.8, marker='.',
                color=color[key], label=label)
    ax.set_title(sweep.label(panel) if by_series else sweep.name)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='x-small')
  axes[0][0].set_ylabel('error (%): test solid, train dashed')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def _pyplot():
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError('report plots need matplotlib: pip install matplotlib') from e
  matplotlib.use('Agg')  # Files only; works without a display.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
