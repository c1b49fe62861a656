"""Tests for resnet_jax.sweep and the sweep files in experiments/.

Only `test_run_*` start real training processes (a CIFAR ResNet-8 on 16x16
synthetic data for 4 steps); report tests read metrics files written by hand.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest

from resnet_jax import cli
from resnet_jax import configlib
from resnet_jax import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPTH_SHORTCUT = os.path.join(REPO, 'experiments', 'depth_shortcut.py')
TABLE3 = os.path.join(REPO, 'experiments', 'imagenet_table3.py')

# A tiny training run: ResNet-8 on 16x16 synthetic data, 4 steps, final eval.
TINY = {
    'image_size': 16, 'num_train_steps': 4, 'batch_size': 8, 'eval_batch_size': 8,
    'num_eval_batches': 1, 'log_every_steps': 2, 'eval_every_steps': 4,
    'checkpoint_every_steps': 4, 'model.depth': 8,
}


def _write_sweep(tmp_path, points_src: str) -> str:
  """A sweep file in tmp_path whose get_sweep returns the given points."""
  path = tmp_path / 'tiny_sweep.py'
  path.write_text(textwrap.dedent(f"""\
      from resnet_jax import sweep
      CONFIG = {os.path.join(REPO, 'configs', 'fake_data.py') + ':model=cifar20'!r}
      TINY = {TINY!r}

      def get_sweep(arg=None):
        return sweep.Sweep(points=[{points_src}])
      """))
  return str(path)


# --- Grid expansion -----------------------------------------------------------


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
  with pytest.raises(configlib.ConfigError, match='names .*depht'):
    sweep.product(name='d{depht}', config='c.py', depth=[20])


def test_depth_shortcut_presets():
  smoke = sweep.load_sweep(DEPTH_SHORTCUT + ':preset=smoke')
  assert len(smoke.points) == 20  # 5 depths x 4 shortcuts x 1 seed.
  names = [p.name for p in smoke.points]
  assert names[:4] == ['d20-A-s0', 'd20-B-s0', 'd20-C-s0', 'd20-none-s0']
  assert names[-1] == 'd110-none-s0'
  assert all(p.overrides['num_train_steps'] == 50 for p in smoke.points)
  assert smoke.points[0].config == 'configs/cifar10.py:depth=20,shortcut=A,recipe=paper'

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
  with pytest.raises(configlib.ConfigError, match=re.escape(message)):
    sweep.load_sweep(f'{DEPTH_SHORTCUT}:{arg}')


def test_imagenet_table3_grid():
  table3 = sweep.load_sweep(TABLE3 + ':data_dir=/data/tfds')
  assert [p.name for p in table3.points] == [
      'plain34-s0', 'r34-A-s0', 'r34-B-s0', 'r34-C-s0', 'r50-B-s0', 'r101-B-s0',
      'r152-B-s0']
  assert table3.paper_results['plain34'] == {'top1_err': 28.54, 'top5_err': 10.02}
  assert table3.paper_results['r152-B'] == {'top1_err': 21.43, 'top5_err': 5.71}
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


def test_select_only_and_index():
  points = sweep.load_sweep(DEPTH_SHORTCUT + ':preset=smoke').points
  assert [p.name for p in sweep.select(points, 'd110-*,d20-A-*')] == [
      'd20-A-s0', 'd110-A-s0', 'd110-B-s0', 'd110-C-s0', 'd110-none-s0']
  assert sweep.select(points, '*-none-*', index=1)[0].name == 'd32-none-s0'
  with pytest.raises(configlib.ConfigError, match='matches no point'):
    sweep.select(points, 'd21')
  with pytest.raises(configlib.ConfigError, match='out of range: 20 points'):
    sweep.select(points, index=20)


def test_load_sweep_errors(tmp_path):
  with pytest.raises(configlib.ConfigError, match='does not exist'):
    sweep.load_sweep(str(tmp_path / 'nope.py'))
  dup = _write_sweep(tmp_path, "sweep.Point('a', CONFIG), sweep.Point('a', CONFIG)")
  with pytest.raises(configlib.ConfigError, match="two points are named 'a'"):
    sweep.load_sweep(dup)


# --- run ------------------------------------------------------------------------


def _statuses(workdir, names):
  return {n: json.loads((workdir / n / 'status.json').read_text()) for n in names}


def test_run_records_failures_then_skips_finished_points(tmp_path, capsys, monkeypatch,
                                                         compile_cache):
  # The points' processes inherit the environment: unoptimised XLA, shared cache.
  for key, value in compile_cache.items():
    monkeypatch.setenv(key, value)
  spec = _write_sweep(tmp_path, """
      sweep.Point('ok', CONFIG, dict(TINY)),
      sweep.Point('badfield', CONFIG, {**TINY, 'no_such_field': 1}),
      sweep.Point('badshortcut', CONFIG, {**TINY, 'model.shortcut': 'Z'}),""")
  workdir = tmp_path / 'runs'
  argv = ['run', spec, f'--workdir={workdir}']
  assert sweep.main(argv + ['--parallel=2']) == 1
  out = capsys.readouterr().out
  status = _statuses(workdir, ['ok', 'badfield', 'badshortcut'])

  assert status['ok']['state'] == 'done' and status['ok']['returncode'] == 0
  assert status['ok']['final_step'] == 4
  assert 0.0 <= status['ok']['eval_top1'] <= 1.0
  for name in ('config.json', 'metrics.jsonl', 'log.txt', 'checkpoints'):
    assert (workdir / 'ok' / name).exists(), name
  # Caught before starting a process: the config does not load.
  assert status['badfield']['state'] == 'failed'
  assert status['badfield']['returncode'] == 2
  assert "unknown config field 'no_such_field'" in status['badfield']['reason']
  # Caught by main itself: its exit code and last log lines are kept.
  assert status['badshortcut']['state'] == 'failed'
  assert status['badshortcut']['returncode'] == 2
  assert status['badshortcut']['reason'].startswith('error:')
  assert "'Z'" in status['badshortcut']['reason']
  assert status['badshortcut']['log_tail']
  assert '1 done, 2 failed' in out or ('1 done' in out and '2 failed' in out)

  # Second run of the finished point: skipped, nothing rerun or rewritten.
  log_before = (workdir / 'ok' / 'log.txt').read_text()
  assert sweep.main(argv + ['--only=ok']) == 0
  assert 'skipped' in capsys.readouterr().out
  assert (workdir / 'ok' / 'log.txt').read_text() == log_before
  assert log_before.count('=== ') == 2  # One attempt: its start and exit lines.
  assert _statuses(workdir, ['ok'])['ok'] == status['ok']

  # Failed points are retried on the next run (and fail again).
  assert sweep.main(argv + ['--only=bad*']) == 1
  assert _statuses(workdir, ['badfield'])['badfield']['attempts'] == 2


def test_run_dry_run_prints_commands_and_runs_nothing(tmp_path, capsys):
  spec = _write_sweep(
      tmp_path, "sweep.Point('p', CONFIG, {'seed': 3, 'lr_boundaries_steps': (2, 3)})")
  workdir = tmp_path / 'runs'
  assert sweep.main(['run', spec, f'--workdir={workdir}', '--dry_run']) == 0
  out = capsys.readouterr().out
  assert '-m resnet_jax.main' in out and '--config.seed=3' in out
  assert "'--config.lr_boundaries_steps=(2, 3)'" in out
  assert f'--workdir={workdir}/p' in out
  assert not workdir.exists()


def test_run_refuses_a_workdir_of_a_different_config(tmp_path, capsys):
  spec = _write_sweep(tmp_path, "sweep.Point('p', CONFIG, {'seed': 1})")
  point_dir = tmp_path / 'runs' / 'p'
  point_dir.mkdir(parents=True)
  sweep.write_status(str(point_dir), {'state': 'done', 'spec': {
      'config': 'other.py', 'overrides': {}}})
  assert sweep.main(['run', spec, f'--workdir={tmp_path / "runs"}']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'use another --workdir' in err
  assert len(err.strip().splitlines()) == 1


# --- report -----------------------------------------------------------------------


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
                           name='grid', series_labels={'none': 'plain'})
      """))
  workdir = tmp_path / 'runs'
  accuracy = {'d20-A': (0.90, 0.92), 'd56-A': (0.93, 0.93), 'd20-none': (0.80, 0.84)}
  for group, (a0, a1) in accuracy.items():
    _fake_run(str(workdir / f'{group}-s0'), top1_final=a0)
    _fake_run(str(workdir / f'{group}-s1'), top1_final=a1, seed_shift=0.1)
  # d56-none: one seed interrupted after its first eval, the other never started.
  _fake_run(str(workdir / 'd56-none-s0'), top1_final=0.5, steps=(50,), done=False)

  out = tmp_path / 'report'
  assert sweep.main(['report', str(spec_path), f'--workdir={workdir}', f'--out={out}']) == 0

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
  d20 = summary['d20-A']
  assert d20['n'] == '2' and d20['complete'] == 'True'
  assert float(d20['test_err_top1_mean']) == pytest.approx(9.0)
  assert float(d20['test_err_top1_std']) == pytest.approx(math.sqrt(2), abs=1e-4)
  assert float(summary['d56-A']['test_err_top1_std']) == pytest.approx(0.0)
  assert summary['d56-none']['n'] == '1' and summary['d56-none']['complete'] == 'False'

  md = (out / 'results.md').read_text()
  assert '| depth | A | paper A | plain |' in md
  assert '| 20 | 9.00 ± 1.41 | 8.75 | 18.00 ± 2.83 |' in md
  assert '| 56 | 7.00 ± 0.00 |  | 50.00 |' in md
  assert '| d56-none † | 56 | none | 1 | 50.00 |' in md
  assert 'Dataset: `fake`' in md
  for png in ('error_vs_depth.png', 'curves.png'):
    data = (out / png).read_bytes()
    assert data.startswith(b'\x89PNG') and len(data) > 5000, png


def test_report_without_any_metrics_is_a_one_line_error(tmp_path, capsys):
  assert sweep.main(['report', DEPTH_SHORTCUT + ':preset=smoke',
                     f'--workdir={tmp_path}']) == 2
  assert 'run the sweep first' in capsys.readouterr().err


# --- slurm ------------------------------------------------------------------------


def test_slurm_script_has_one_array_task_per_point(tmp_path):
  workdir = tmp_path / 'abl'
  result = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.sweep', 'slurm',
       'experiments/depth_shortcut.py:preset=paper', f'--workdir={workdir}',
       '--only=*-A-*,*-none-*', '--sbatch=--gres=gpu:1', '--max_concurrent=4',
       '--setup=source .venv/bin/activate'],
      cwd=REPO, capture_output=True, text=True, check=True)
  script = result.stdout
  assert script.startswith('#!/bin/bash\n')
  assert '#SBATCH --array=0-9%4\n' in script  # 5 depths x {A, none}.
  assert '#SBATCH --gres=gpu:1\n' in script
  assert f'#SBATCH --output={workdir}/slurm-%A_%a.out' in script
  assert 'source .venv/bin/activate\n' in script
  command = script.strip().splitlines()[-1]
  assert command.startswith('exec ') and ' -m resnet_jax.sweep run ' in command
  assert "'--only=*-A-*,*-none-*'" in command
  assert command.endswith('--index="$SLURM_ARRAY_TASK_ID"')
  assert workdir.is_dir()  # SLURM needs the --output folder to exist.


def test_point_commands_parse_back_to_the_same_config(tmp_path):
  """main's flags read the emitted --config.KEY=VALUE as configlib.load does."""
  script = textwrap.dedent("""\
      import sys
      from absl import flags
      from ml_collections import config_flags
      from resnet_jax import configlib, sweep
      sw = sweep.load_sweep(sys.argv[1])
      p = sw.points[int(sys.argv[2])]
      cmd = sweep.point_command(p, '/tmp/unused', sw.source)
      config_flags.DEFINE_config_file('config', None, '', lock_config=True)
      flags.DEFINE_string('workdir', None, '')
      sys.argv = ['main'] + cmd[3:]  # config_flags reads overrides from sys.argv.
      flags.FLAGS(sys.argv)
      want = configlib.load(sweep.resolve_config_path(p.config, sw.source), p.overrides)
      assert flags.FLAGS.config.to_dict() == want.to_dict()
      """)
  # Tuples of floats, dotted fields, strings with ':' and a float override.
  result = subprocess.run(
      [sys.executable, '-c', script, TABLE3 + ':data_dir=/d', '0'], cwd=REPO,
      capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]


def test_report_of_a_grid_without_series(tmp_path):
  """The README's example shape: one axis plus seeds, error vs that axis."""
  spec_path = tmp_path / 'widths.py'
  spec_path.write_text(textwrap.dedent("""\
      from resnet_jax import sweep

      def get_sweep(arg=None):
        return sweep.Sweep(points=sweep.product(
            name='w{width}-s{seed}', group='w{width}', config='configs/cifar10.py',
            overrides=lambda width, seed: {'model.base_width': width, 'seed': seed},
            width=[32, 16], seed=[0]), x='width', series='',
            paper_results={'w16': {'top1_err': 6.97}})
      """))
  workdir = tmp_path / 'runs'
  _fake_run(str(workdir / 'w16-s0'), top1_final=0.9)
  _fake_run(str(workdir / 'w32-s0'), top1_final=0.95)
  out = tmp_path / 'report'
  assert sweep.main(['report', str(spec_path), f'--workdir={workdir}', f'--out={out}']) == 0
  md = (out / 'results.md').read_text()
  assert '| w32 | 32 | 1 | 5.00 |  |' in md and '| w16 | 16 | 1 | 10.00 | 6.97 |' in md
  assert (out / 'error_vs_width.png').read_bytes().startswith(b'\x89PNG')


def test_failure_reason_prefers_the_error_line():
  assert sweep.failure_reason(['start', 'error: bad value', 'I1125 cleanup']) == (
      'error: bad value')
  tail = ['Traceback (most recent call last):', '  File "x.py", line 1',
          'TypeError: in user code:', '    TypeError: f() missing 1 argument']
  assert sweep.failure_reason(tail) == 'TypeError: f() missing 1 argument'
  assert sweep.failure_reason(['a', 'b']) == 'b'
  assert sweep.failure_reason([]) == 'no output'


def test_a_point_that_exits_preempted_is_interrupted_not_done(tmp_path, capsys,
                                                             monkeypatch):
  """main's status 75 (checkpoint saved on SIGTERM) leaves the point to resume."""
  spec = _write_sweep(tmp_path, """
      sweep.Point('p', CONFIG, dict(TINY)),""")
  # A stand-in for main stopped by a signal sent to it alone: the sweep was not.
  monkeypatch.setattr(sweep, 'point_command', lambda *a: [
      sys.executable, '-c', f'import sys; sys.exit({cli.EXIT_PREEMPTED})'])
  workdir = tmp_path / 'runs'
  assert sweep.main(['run', spec, f'--workdir={workdir}']) == cli.EXIT_PREEMPTED
  status = _statuses(workdir, ['p'])['p']
  assert status['state'] == 'interrupted' and status['returncode'] == cli.EXIT_PREEMPTED
  assert 'interrupted' in capsys.readouterr().out
