"""Tests for resnet_jax.sweep.report and .plots, on metrics files written by hand."""

import csv
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from resnet_jax import sweep
from resnet_jax.sweep import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPTH_SHORTCUT = os.path.join(REPO, 'experiments', 'depth_shortcut.py')


def _sweep_cli(*args):
  return subprocess.run([sys.executable, '-m', 'resnet_jax.sweep', *args], cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                        text=True, timeout=300)


def _fake_run(point_dir, *, top1_final, steps=(50, 100), done=True, seed_shift=0.0):
  """Writes the files a finished run leaves: metrics.jsonl, config.json, status.json."""
  os.makedirs(point_dir, exist_ok=True)
  rows = []
  for i, step in enumerate(steps):
    frac = (i + 1) / len(steps)
    rows.append({'step': step, 'train_loss': 2.0 - frac, 'train_top1': 0.5 * frac + seed_shift,
                 'lr': 0.1, 'images_per_sec': 100.0})
    rows.append({'step': step, 'eval_loss': 1.5, 'eval_top1': top1_final * frac,
                 'eval_top5': min(1.0, top1_final * frac + 0.2), 'eval_count': 1000.0})
  with open(os.path.join(point_dir, 'metrics.jsonl'), 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in rows))
  with open(os.path.join(point_dir, 'config.json'), 'w') as f:
    json.dump({'dataset': 'fake', 'batch_size': 64, 'optimizer': 'sgd',
               'learning_rate': 0.1, 'schedule': 'piecewise'}, f)
  sweep.write_status(point_dir, {'state': 'done' if done else 'interrupted',
                                 'final_step': steps[-1] if done else None})


def test_report_writes_csv_markdown_and_plots(tmp_path):
  spec_path = tmp_path / 'grid.py'
  spec_path.write_text(textwrap.dedent("""\
      from resnet_jax import sweep

      def get_sweep(arg=None):
        points = sweep.product(
            name='d{depth}-{shortcut}-s{seed}', group='d{depth}-{shortcut}',
            config='configs/cifar10.py:depth={depth},shortcut={shortcut}',
            overrides=lambda seed, **_: {'seed': seed},
            depth=[20, 56], shortcut=['A', 'none'], seed=[0, 1])
        return sweep.Sweep(points=points, paper_results={'d20-A': {'top1_err': 8.75}},
                           name='grid', series_labels={'none': 'plain'},
                           x='depth', series='shortcut', average_over='seed')
      """))
  workdir = tmp_path / 'runs'
  accuracy = {'d20-A': (0.90, 0.92), 'd56-A': (0.93, 0.93), 'd20-none': (0.80, 0.84)}
  for group, (a0, a1) in accuracy.items():
    _fake_run(str(workdir / f'{group}-s0'), top1_final=a0)
    _fake_run(str(workdir / f'{group}-s1'), top1_final=a1, seed_shift=0.1)
  # d56-none: one seed interrupted after its first eval, the other never started.
  _fake_run(str(workdir / 'd56-none-s0'), top1_final=0.5, steps=(50,), done=False)

  out = tmp_path / 'report'
  result = _sweep_cli('report', str(spec_path), f'--workdir={workdir}', f'--out={out}')
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == [str(out / name) for name in (
      'points.csv', 'summary.csv', 'results.md', 'error_vs_depth.png', 'curves.png')]

  with open(out / 'points.csv') as f:
    points = {r['point']: r for r in csv.DictReader(f)}
  assert len(points) == 8
  assert float(points['d20-A-s0']['test_err_top1']) == pytest.approx(10.0)
  assert float(points['d20-A-s0']['test_err_top5']) == pytest.approx(0.0)
  assert float(points['d20-A-s0']['train_err_top1']) == pytest.approx(50.0)
  assert points['d20-A-s0']['paper_top1_err'] == '8.75'
  assert points['d56-none-s0']['state'] == 'interrupted'
  assert float(points['d56-none-s0']['test_err_top1']) == pytest.approx(50.0)
  assert points['d56-none-s1']['state'] == 'not run'
  assert points['d56-none-s1']['test_err_top1'] == ''

  with open(out / 'summary.csv') as f:
    summary = {r['group']: r for r in csv.DictReader(f)}
  assert list(summary) == ['d20-A', 'd20-none', 'd56-A', 'd56-none']
  assert list(summary['d20-A'])[:4] == ['group', 'depth', 'shortcut', 'n']  # No seed.
  d20 = summary['d20-A']
  assert d20['n'] == '2' and d20['complete'] == 'True'
  assert float(d20['test_err_top1_mean']) == pytest.approx(9.0)
  assert float(d20['test_err_top1_std']) == pytest.approx(math.sqrt(2), abs=1e-4)
  assert float(summary['d56-A']['test_err_top1_std']) == pytest.approx(0.0)
  assert summary['d56-none']['n'] == '1' and summary['d56-none']['complete'] == 'False'

  md = (out / 'results.md').read_text()
  assert '| depth | A | paper A | plain |' in md
  assert '| 20 | 9.00 ± 1.41 | 8.75 | 18.00 ± 2.83 |' in md
  assert '| 56 | 7.00 ± 0.00 |  | 50.00 † |' in md
  assert md.count(report.PARTIAL_NOTE) == 2  # Under both tables.
  assert '| group | depth | shortcut | seeds | test err % (top1) |' in md
  assert '| d56-none † | 56 | none | 1 | 50.00 |' in md
  assert 'mean ± std over seeds at the final eval' in md
  assert 'Dataset: `fake`' in md
  for png in ('error_vs_depth.png', 'curves.png'):
    data = (out / png).read_bytes()
    assert data.startswith(b'\x89PNG') and len(data) > 5000, png


def test_report_without_any_metrics_is_a_one_line_error(tmp_path):
  result = _sweep_cli('report', DEPTH_SHORTCUT + ':preset=smoke', f'--workdir={tmp_path}')
  assert result.returncode == 2
  assert 'run the sweep first' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


def test_report_of_a_grid_without_series(tmp_path):
  """The README's example shape: one axis plus seeds, error vs that axis."""
  grid = sweep.Sweep(points=sweep.product(
      name='w{width}-s{seed}', group='w{width}', config='configs/cifar10.py',
      overrides=lambda width, seed: {'model.base_width': width, 'seed': seed},
      width=[32, 16], seed=[0]), x='width', series='', average_over='seed',
      paper_results={'w16': {'top1_err': 6.97}})
  sweep.validate(grid)
  workdir = tmp_path / 'runs'
  _fake_run(str(workdir / 'w16-s0'), top1_final=0.9)
  _fake_run(str(workdir / 'w32-s0'), top1_final=0.95)
  out = tmp_path / 'report'
  files = sweep.write_report(grid, grid.points, str(workdir), str(out), sweep_spec='w.py')
  assert sorted(files) == ['curves.png', 'error_vs_width.png', 'points.csv',
                           'results.md', 'summary.csv']
  md = (out / 'results.md').read_text()
  assert '| w32 | 32 | 1 | 5.00 |  |' in md and '| w16 | 16 | 1 | 10.00 | 6.97 |' in md
  assert '## Test error % (top-1) by' not in md  # No series: no pivot.
  assert (out / 'error_vs_width.png').read_bytes().startswith(b'\x89PNG')


def test_report_without_axes_has_no_error_plot(tmp_path):
  """No x, series or averaging axis: a table of the points, and curves."""
  grid = sweep.Sweep(points=[sweep.Point('a', 'c.py'), sweep.Point('b', 'c.py')])
  _fake_run(str(tmp_path / 'a'), top1_final=0.9)
  _fake_run(str(tmp_path / 'b'), top1_final=0.8)
  files = sweep.write_report(grid, grid.points, str(tmp_path), str(tmp_path / 'out'),
                             sweep_spec='s.py')
  assert sorted(files) == ['curves.png', 'points.csv', 'results.md', 'summary.csv']
  md = (tmp_path / 'out' / 'results.md').read_text()
  assert '| group | points | test err % (top1) | paper % (top1) | train err % |' in md
  assert '| a | 1 | 10.00 |  | 50.00 |' in md
  assert 'mean ± std over each group' in md


def test_collect_reads_non_finite_metrics_and_a_torn_last_line(tmp_path):
  """metric_writers stores NaN as 'nan'; a killed run leaves half a line."""
  point_dir = tmp_path / 'p'
  point_dir.mkdir()
  (point_dir / 'metrics.jsonl').write_text(
      json.dumps({'step': 10, 'train_loss': 'nan', 'train_top1': 0.25}) + '\n'
      + json.dumps({'step': 10, 'eval_loss': 'inf', 'eval_top1': 0.5}) + '\n'
      + '{"step": 20, "train_lo')
  [result] = report.collect([sweep.Point('p', 'c.py')], str(tmp_path))
  assert result.state == 'unknown'  # Metrics but no status.json.
  assert math.isnan(result.train_loss) and result.eval_loss == math.inf
  assert result.train_top1_err == 75.0 and result.top1_err == 50.0
  assert result.step == 10 and result.train_curve == ([10], [75.0])
