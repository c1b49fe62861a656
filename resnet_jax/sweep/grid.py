"""A sweep's definition: its points, how they group, and what the report shows.

Pure data and checks; nothing here touches a workdir or starts a process.
"""

import ast
import dataclasses
import fnmatch
import itertools
import json
import os
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

from resnet_jax import configlib
from resnet_jax.errors import ConfigError

_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+=-]*$')


@dataclasses.dataclass
class Point:
  """One run of `resnet_jax.main`.

  Attributes:
    name: unique within the sweep; the point's workdir is WORKDIR/name.
    config: config spec as for `--config`, e.g.
      'configs/cifar10.py:depth=20,shortcut=A'. A relative path is looked up
      from the current directory, then from the sweep file's project root.
    overrides: dotted config fields and values, as `--config.KEY=VALUE`.
    tags: the grid coordinates (e.g. depth, shortcut, seed) used by `report`.
    group: the points averaged together in the report, which differ only in
      the sweep's `average_over` tag ('' = the name: a group of one); the
      paper's numbers are matched by group.
  """
  name: str
  config: str
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  tags: dict[str, Any] = dataclasses.field(default_factory=dict)
  group: str = ''

  def __post_init__(self):
    self.group = self.group or self.name

  def spec(self) -> dict[str, Any]:
    """What defines the run: recorded in status.json to catch reused workdirs."""
    return json.loads(json.dumps(
        {'config': self.config, 'overrides': self.overrides}, sort_keys=True,
        default=str))


@dataclasses.dataclass
class Sweep:
  """A list of points and how to report them.

  Attributes:
    points: the runs, in the order they are run.
    paper_results: published numbers by group, in percent, e.g.
      {'d20-A': {'top1_err': 8.75}}; keys 'top1_err' and 'top5_err'.
    name: a title for reports ('' = the sweep file's name).
    description: one line for reports: what the grid measures.
    notes: Markdown appended to the report (caveats about the paper's numbers).
    x: the tag on the x axis of the error plot and the rows of the pivot
      table ('' = no plot, no pivot).
    series: the tag that makes one line (and one curve panel) per value
      ('' = one line).
    average_over: the tag that varies within a group, e.g. 'seed': the report
      gives mean ± std over it ('' = every group is one point, or its points
      differ in no tag).
    series_labels: display names for series values, e.g. {'none': 'plain'}.
    metrics: which test errors to report: ('top1',) or ('top1', 'top5').
    source: the sweep file (set by `load_sweep`).
  """
  points: list[Point]
  paper_results: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  name: str = ''
  description: str = ''
  notes: str = ''
  x: str = ''
  series: str = ''
  average_over: str = ''
  series_labels: dict[str, str] = dataclasses.field(default_factory=dict)
  metrics: tuple[str, ...] = ('top1',)
  source: str = ''

  def label(self, series_value) -> str:
    return self.series_labels.get(str(series_value), str(series_value))

  def tag_keys(self) -> list[str]:
    """Every tag of the points, in first-seen order."""
    keys = []
    for p in self.points:
      keys += [k for k in p.tags if k not in keys]
    return keys

  def group_keys(self) -> list[str]:
    """The tags that describe a group: all but `average_over`."""
    return [k for k in self.tag_keys() if k != self.average_over]


def unique(values: Iterable[Any]) -> list[Any]:
  """The values without repeats, in first-seen order (tag values, states)."""
  out = []
  for v in values:
    if v not in out:
      out.append(v)
  return out


def sort_key(value):
  """Orders tag values: numbers before strings, each in their natural order."""
  return (0, value, '') if isinstance(value, (int, float)) else (1, 0, str(value))


Template = str | Callable[..., Any]


def _fill(template: Template, values: Mapping[str, Any], what: str):
  """A template filled with the grid values: str.format, or a function call."""
  if callable(template):
    return template(**values)
  try:
    return template.format(**values)
  except (KeyError, IndexError) as e:
    raise ConfigError(f'{what} template {template!r} names {e} which is not a grid '
                      f'axis; axes: {sorted(values)}') from None


def product(name: Template, config: Template,
            overrides: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
            group: Template | None = None, **axes: Iterable[Any]) -> list[Point]:
  """Expands a grid: one Point per combination of the axes' values.

  Args:
    name: the point's name, a str.format template over the axes
      ('d{depth}-{shortcut}-s{seed}') or a function of them (keyword args).
    config: the config spec, a template or function in the same way.
    overrides: fixed config overrides, or a function of the axes returning them
      (e.g. `lambda seed, **_: {'seed': seed}`).
    group: template or function for the point's group (the points averaged
      together, e.g. those differing only by seed); None: each point is its
      own group.
    **axes: axis name -> values; the last axis varies fastest.

  Returns:
    The points, with `tags` holding each point's axis values.
  """
  if not axes:
    raise ConfigError('product() needs at least one axis, e.g. depth=[20, 56]')
  keys = list(axes)
  points = []
  for values in itertools.product(*(list(axes[k]) for k in keys)):
    tags = dict(zip(keys, values))
    extra = overrides(**tags) if callable(overrides) else overrides
    points.append(Point(
        name=_fill(name, tags, 'name'), config=_fill(config, tags, 'config'),
        overrides=dict(extra or {}), tags=tags,
        group=_fill(group, tags, 'group') if group is not None else ''))
  return points


def validate(sweep: Sweep) -> None:
  """Checks names, groups, paper keys and the report's tags.

  Raises:
    ConfigError: names not unique or not usable as folder names; a group
      whose points differ in a tag other than `average_over`; paper results
      for groups no point has; `x`, `series` or `average_over` naming a tag
      some point lacks.
  """
  if not isinstance(sweep, Sweep):
    raise ConfigError(f'get_sweep() returned {type(sweep).__name__}; it must return '
                      'resnet_jax.sweep.Sweep(points=[...])')
  if not sweep.points:
    raise ConfigError('the sweep has no points')
  seen = set()
  for p in sweep.points:
    if not _NAME_RE.match(p.name):
      raise ConfigError(f'point name {p.name!r} must be letters, digits and ._+=- '
                        '(it names a folder)')
    if p.name in seen:
      raise ConfigError(f'two points are named {p.name!r}; names must be unique '
                        '(add the differing axis, e.g. -s{seed}, to the name)')
    seen.add(p.name)
  for field in ('x', 'series', 'average_over'):
    tag = getattr(sweep, field)
    lacking = [p for p in sweep.points if tag and tag not in p.tags]
    if lacking:
      raise ConfigError(f'Sweep({field}={tag!r}) names a tag that point '
                        f'{lacking[0].name!r} lacks; its tags: '
                        f'{", ".join(lacking[0].tags) or "none"}')
  first: dict[str, Point] = {}
  for p in sweep.points:
    other = first.setdefault(p.group, p)
    differ = sorted(k for k in set(p.tags) | set(other.tags)
                    if k != sweep.average_over and p.tags.get(k) != other.tags.get(k))
    if differ:
      raise ConfigError(
          f'points {other.name!r} and {p.name!r} of group {p.group!r} differ in '
          f'{", ".join(differ)}: a group is averaged, so its points may differ only '
          f'in the average_over tag ({sweep.average_over or "none set"})')
  unknown = sorted(set(sweep.paper_results) - set(first))
  if unknown:
    raise ConfigError(f'paper_results names groups {unknown} that no point has; '
                      f'groups: {sorted(first)}')


def load_sweep(spec: str) -> Sweep:
  """Loads 'path/to/sweep.py[:arg]' by calling its get_sweep(arg).

  Raises:
    ConfigError: the file does not exist, its code raises (named by file and
      line), or the sweep it returns is invalid.
  """
  path, _, arg = spec.partition(':')
  module = configlib.load_module(path, kind='sweep')
  if not hasattr(module, 'get_sweep'):
    raise ConfigError(f'sweep file {path!r} defines no get_sweep(arg=None)')
  with configlib.errors_of(path, 'sweep'):
    sweep = module.get_sweep(arg or None)
  validate(sweep)
  sweep.source = os.path.abspath(path)
  sweep.name = sweep.name or os.path.splitext(os.path.basename(path))[0]
  return sweep


def select(points: Sequence[Point], only: str | None = None,
           index: int | None = None) -> list[Point]:
  """The points named by --only (comma-separated globs), then the --index-th of them."""
  selected = list(points)
  if only:
    patterns = [p.strip() for p in only.split(',') if p.strip()]
    selected = [p for p in points if any(fnmatch.fnmatchcase(p.name, pat)
                                         for pat in patterns)]
    if not selected:
      raise ConfigError(f'--only={only} matches no point; names look like '
                        f'{points[0].name!r} (globs work: d20-*,*-A-*)')
  if index is not None:
    if not 0 <= index < len(selected):
      raise ConfigError(f'--index={index} is out of range: {len(selected)} points '
                        f'selected, valid 0..{len(selected) - 1}')
    selected = [selected[index]]
  return selected


def parse_set(items: Sequence[str]) -> dict[str, Any]:
  """--set KEY=VALUE items into overrides; values parse as Python literals, else text."""
  out = {}
  for item in items or ():
    key, sep, text = item.partition('=')
    if not sep or not key:
      raise ConfigError(f'--set {item!r} is not KEY=VALUE (e.g. --set=data_dir=/data)')
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def with_overrides(points: Sequence[Point], extra: Mapping[str, Any]) -> list[Point]:
  """The points with `extra` overrides added (--set applies to every point)."""
  if not extra:
    return list(points)
  return [dataclasses.replace(p, overrides={**p.overrides, **extra}) for p in points]
