"""Tests for resnet_jax.sweep.state: a point's files and what "finished" means."""

import json

import pytest

from resnet_jax import sweep
from resnet_jax.errors import ConfigError
from resnet_jax.sweep import state


def _point(**overrides):
  return sweep.Point('p', 'configs/cifar10.py', overrides)


def _write(point_dir, *, status, rows):
  point_dir.mkdir(exist_ok=True)
  state.write_status(str(point_dir), status)
  (point_dir / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))


def test_failure_reason_prefers_the_error_line():
  assert sweep.failure_reason(['start', 'error: bad value', 'I1125 cleanup']) == (
      'error: bad value')
  tail = ['Traceback (most recent call last):', '  File "x.py", line 1',
          'TypeError: in user code:', '    TypeError: f() missing 1 argument']
  assert sweep.failure_reason(tail) == 'TypeError: f() missing 1 argument'
  assert sweep.failure_reason(['a', 'b']) == 'b'
  assert sweep.failure_reason([]) == 'no output'


def test_is_finished_needs_exit_0_of_this_config_and_the_final_eval(tmp_path):
  point = _point(seed=1)
  done = {'state': 'done', 'spec': point.spec(), 'final_step': 8}
  final = [{'step': 8, 'train_loss': 1.0}, {'step': 8, 'eval_top1': 0.5}]
  _write(tmp_path / 'p', status=done, rows=final)
  assert sweep.is_finished(str(tmp_path / 'p'), point)
  assert not sweep.is_finished(str(tmp_path / 'p'), _point(seed=2))  # Another config.
  _write(tmp_path / 'p', status=done, rows=final[:1])  # No eval at step 8.
  assert not sweep.is_finished(str(tmp_path / 'p'), point)
  _write(tmp_path / 'p', status={**done, 'state': 'interrupted'}, rows=final)
  assert not sweep.is_finished(str(tmp_path / 'p'), point)
  assert not sweep.is_finished(str(tmp_path / 'never'), point)


def test_a_torn_status_file_reads_as_never_run(tmp_path):
  (tmp_path / 'status.json').write_text('{"state": "do')
  assert sweep.read_status(str(tmp_path)) is None
  state.write_status(str(tmp_path), {'state': 'done'})
  assert sweep.read_status(str(tmp_path)) == {'state': 'done'}
  assert not (tmp_path / 'status.json.tmp').exists()


def test_check_workdir_matches(tmp_path):
  point = _point(seed=1)
  state.check_workdir_matches(str(tmp_path / 'none'), point)  # Nothing there yet.
  _write(tmp_path / 'p', status={'state': 'done', 'spec': _point(seed=2).spec()}, rows=[])
  with pytest.raises(ConfigError, match=r'holds a run of a different config '
                     r'\(configs/cifar10.py seed=2; now configs/cifar10.py seed=1\)'):
    state.check_workdir_matches(str(tmp_path / 'p'), point)


def test_final_eval_and_log_tail(tmp_path):
  rows = [{'step': 4, 'eval_top1': 0.1}, {'step': 8, 'train_loss': 2.0},
          {'step': 8, 'eval_top1': 0.2}, {'step': 8, 'eval_top1': 0.3}]
  assert state.final_eval(rows) == {'step': 8, 'eval_top1': 0.3}  # A re-logged step.
  assert state.final_eval(rows, 4) == {'step': 4, 'eval_top1': 0.1}
  assert state.final_eval(rows, 6) is None
  assert state.final_eval([]) is None
  (tmp_path / 'log.txt').write_text('old attempt\n' + 'a\n\nb 10%\rb 100%\n')
  assert state.log_tail(str(tmp_path)) == ['old attempt', 'a', 'b 100%']
  assert state.log_tail(str(tmp_path), n=1, offset=len('old attempt\n')) == ['b 100%']
