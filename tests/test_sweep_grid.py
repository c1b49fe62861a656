"""Tests for resnet_jax.sweep.grid and the sweep files in experiments/ (no process runs)."""

import os
import re
import textwrap

import pytest

from resnet_jax import configlib
from resnet_jax import sweep
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPTH_SHORTCUT = os.path.join(REPO, 'experiments', 'depth_shortcut.py')
TABLE3 = os.path.join(REPO, 'experiments', 'imagenet_table3.py')
CONFIG = os.path.join(REPO, 'configs', 'fake_data.py') + ':model=cifar20'


def _write_sweep(tmp_path, body: str) -> str:
  """A sweep file in tmp_path whose get_sweep returns `body` (an expression)."""
  path = tmp_path / 'tiny_sweep.py'
  path.write_text(textwrap.dedent(f"""\
      from resnet_jax import sweep
      CONFIG = {CONFIG!r}

      def get_sweep(arg=None):
        return {body}
      """))
  return str(path)


def test_product_expands_the_grid_in_order():
  points = sweep.product(
      name='d{depth}-{shortcut}-s{seed}', group='d{depth}-{shortcut}',
      config='configs/cifar10.py:depth={depth},shortcut={shortcut}',
      overrides=lambda seed, **_: {'seed': seed, 'batch_size': 64},
      depth=[20, 56], shortcut=['A', 'none'], seed=range(2))
  assert len(points) == 8
  assert [p.name for p in points[:3]] == ['d20-A-s0', 'd20-A-s1', 'd20-none-s0']
  p = points[-1]
  assert p.name == 'd56-none-s1' and p.group == 'd56-none'
  assert p.config == 'configs/cifar10.py:depth=56,shortcut=none'
  assert p.overrides == {'seed': 1, 'batch_size': 64}
  assert p.tags == {'depth': 56, 'shortcut': 'none', 'seed': 1}


def test_product_rejects_a_template_naming_no_axis():
  with pytest.raises(ConfigError, match='names .*depht'):
    sweep.product(name='d{depht}', config='c.py', depth=[20])


def test_depth_shortcut_presets():
  smoke = sweep.load_sweep(DEPTH_SHORTCUT + ':preset=smoke')
  assert len(smoke.points) == 20  # 5 depths x 4 shortcuts x 1 seed.
  names = [p.name for p in smoke.points]
  assert names[:4] == ['d20-A-s0', 'd20-B-s0', 'd20-C-s0', 'd20-none-s0']
  assert names[-1] == 'd110-none-s0'
  assert all(p.overrides['num_train_steps'] == 50 for p in smoke.points)
  assert smoke.points[0].config == 'configs/cifar10.py:depth=20,shortcut=A,recipe=paper'
  # The report's axes are the sweep file's choice, stated there.
  assert (smoke.x, smoke.series, smoke.average_over) == ('depth', 'shortcut', 'seed')

  paper = sweep.load_sweep(DEPTH_SHORTCUT + ':preset=paper,seeds=3,dataset=cifar10')
  assert len(paper.points) == 60
  assert {p.group for p in paper.points if p.name.startswith('d56-A-')} == {'d56-A'}
  assert paper.paper_results['d110-A'] == {'top1_err': 6.43}
  d20 = next(p for p in paper.points if p.name == 'd20-A-s2')
  assert d20.overrides == {'seed': 2, 'dataset': 'cifar10'}  # The recipe as it is.
  d110 = next(p for p in paper.points if p.name == 'd110-none-s0')
  # The paper's warm-up for ResNet-110 comes with the config, not the sweep.
  assert configlib.load(sweep.resolve_config_path(d110.config, paper.source),
                        d110.overrides).warmup_steps == 400
  # warmup= overrides every point's, ResNet-110's too, and names the sweep.
  warm = sweep.load_sweep(DEPTH_SHORTCUT + ':preset=cpu,warmup=100,dataset=cifar10')
  assert warm.name == 'depth_shortcut-cpu-warmup100'
  assert {p.overrides['warmup_steps'] for p in warm.points} == {100}
  d110 = next(p for p in warm.points if p.name == 'd110-A-s0')
  assert configlib.load(sweep.resolve_config_path(d110.config, warm.source),
                        d110.overrides).warmup_steps == 100
  # Every point's config and overrides load (the names are real config fields).
  for p in smoke.points[:4] + paper.points[-4:]:
    config = configlib.load(sweep.resolve_config_path(p.config, smoke.source),
                            p.overrides)
    assert config.model.depth == p.tags['depth']
    assert config.model.shortcut == p.tags['shortcut']


@pytest.mark.parametrize('arg, message', [
    ('preset=huge', "unknown preset 'huge'; valid presets: paper, short, cpu, smoke"),
    ('presets=smoke', "unknown config argument 'presets'"),
    ('seeds=0', 'seeds=0 must be at least 1'),
    ('warmup=-5', "warmup=-5 must be -1 (the preset's) or >= 0"),
])
def test_depth_shortcut_bad_arguments(arg, message):
  with pytest.raises(ConfigError, match=re.escape(message)):
    sweep.load_sweep(f'{DEPTH_SHORTCUT}:{arg}')


def test_imagenet_table3_grid():
  table3 = sweep.load_sweep(TABLE3 + ':data_dir=/data/tfds')
  assert [p.name for p in table3.points] == [
      'plain34-s0', 'r34-A-s0', 'r34-B-s0', 'r34-C-s0', 'r50-B-s0', 'r101-B-s0',
      'r152-B-s0']
  assert table3.paper_results['plain34'] == {'top1_err': 28.54, 'top5_err': 10.02}
  assert table3.paper_results['r152-B'] == {'top1_err': 21.43, 'top5_err': 5.71}
  assert (table3.x, table3.series, table3.average_over) == ('depth', 'shortcut', 'seed')
  for p in table3.points:
    config = configlib.load(sweep.resolve_config_path(p.config, table3.source),
                            p.overrides)
    assert config.model.depth == p.tags['depth']
    assert config.model.shortcut == p.tags['shortcut']
    assert config.data_dir == '/data/tfds'
    assert config.batch_size == 256 and config.num_train_steps == 600_000
  # The smoke preset trains on synthetic data, with no warmup longer than the run.
  smoke = sweep.load_sweep(TABLE3 + ':preset=smoke').points[-1]
  config = configlib.load(sweep.resolve_config_path(smoke.config, table3.source),
                          smoke.overrides)
  assert config.dataset == 'fake' and config.warmup_epochs == 0
  assert config.model.depth == 152
  # Two seeds per network: groups average over the seed, as the report says.
  two = sweep.load_sweep(TABLE3 + ':seeds=2')
  assert [p.group for p in two.points[:2]] == ['plain34', 'plain34']


def test_select_only_and_index():
  points = sweep.load_sweep(DEPTH_SHORTCUT + ':preset=smoke').points
  assert [p.name for p in sweep.select(points, 'd110-*,d20-A-*')] == [
      'd20-A-s0', 'd110-A-s0', 'd110-B-s0', 'd110-C-s0', 'd110-none-s0']
  assert sweep.select(points, '*-none-*', index=1)[0].name == 'd32-none-s0'
  with pytest.raises(ConfigError, match='matches no point'):
    sweep.select(points, 'd21')
  with pytest.raises(ConfigError, match='out of range: 20 points'):
    sweep.select(points, index=20)


def test_load_sweep_errors(tmp_path):
  with pytest.raises(ConfigError, match='does not exist'):
    sweep.load_sweep(str(tmp_path / 'nope.py'))
  dup = _write_sweep(
      tmp_path, "sweep.Sweep([sweep.Point('a', CONFIG), sweep.Point('a', CONFIG)])")
  with pytest.raises(ConfigError, match="two points are named 'a'"):
    sweep.load_sweep(dup)
  wrong = _write_sweep(tmp_path, "[sweep.Point('a', CONFIG)]")
  with pytest.raises(ConfigError, match='get_sweep.. returned list; it must return'):
    sweep.load_sweep(wrong)
  (tmp_path / 'empty.py').write_text('X = 1\n')
  with pytest.raises(ConfigError, match='defines no get_sweep'):
    sweep.load_sweep(str(tmp_path / 'empty.py'))


def _grid(**sweep_kwargs) -> sweep.Sweep:
  return sweep.Sweep(sweep.product(
      name='d{depth}-s{seed}', group='d{depth}', config='c.py',
      depth=[20, 56], seed=[0, 1]), **sweep_kwargs)


def test_sweep_axes_are_parameters_without_defaults():
  grid = _grid()
  assert (grid.x, grid.series, grid.average_over) == ('', '', '')
  assert grid.tag_keys() == ['depth', 'seed']
  assert _grid(average_over='seed').group_keys() == ['depth']
  sweep.validate(_grid(x='depth', average_over='seed'))


@pytest.mark.parametrize('kwargs, message', [
    # A group is averaged: its points may differ only in the average_over tag.
    ({}, "points 'd20-s0' and 'd20-s1' of group 'd20' differ in seed: a group is "
         'averaged, so its points may differ only in the average_over tag (none set)'),
    ({'average_over': 'depth'}, "of group 'd20' differ in seed"),
    ({'average_over': 'seed', 'x': 'width'},
     "Sweep(x='width') names a tag that point 'd20-s0' lacks; its tags: depth, seed"),
    ({'average_over': 'seed', 'series': 'shortcut'}, "Sweep(series='shortcut')"),
    ({'average_over': 'seeds'}, "Sweep(average_over='seeds')"),
    ({'average_over': 'seed', 'paper_results': {'d32': {'top1_err': 7.5}}},
     "paper_results names groups ['d32'] that no point has; groups: ['d20', 'd56']"),
])
def test_validate_names_what_is_inconsistent(kwargs, message):
  with pytest.raises(ConfigError, match=re.escape(message)):
    sweep.validate(_grid(**kwargs))


def test_parse_set_and_with_overrides():
  extra = sweep.parse_set(['data_dir=/data', 'batch_size=64',
                           'lr_boundaries_steps=(2, 3)'])
  assert extra == {'data_dir': '/data', 'batch_size': 64, 'lr_boundaries_steps': (2, 3)}
  with pytest.raises(ConfigError, match="--set 'batch_size' is not KEY=VALUE"):
    sweep.parse_set(['batch_size'])
  points = sweep.with_overrides([sweep.Point('p', 'c.py', {'seed': 1})], extra)
  assert points[0].overrides == {'seed': 1, **extra}
