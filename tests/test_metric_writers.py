"""Tests for resnet_jax.metric_writers: metrics.jsonl written and read back."""

import json
import math

from resnet_jax import metric_writers


def test_non_finite_values_round_trip(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write(1, {'train_loss': float('nan'), 'lr': 0.1})
  writer.write(2, {'train_loss': float('inf'), 'grad': float('-inf'), 'top1': 0.5})
  writer.close()
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  # Strict JSON (no NaN literals): any reader can parse the file.
  assert json.loads(lines[0], parse_constant=lambda c: 1 / 0) == {
      'step': 1, 'train_loss': 'nan', 'lr': 0.1}
  rows = metric_writers.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert math.isnan(rows[0]['train_loss']) and rows[0]['lr'] == 0.1
  assert rows[1] == {'step': 2, 'train_loss': math.inf, 'grad': -math.inf, 'top1': 0.5}
  assert isinstance(rows[0]['step'], int)


def test_a_torn_last_line_is_skipped_and_a_resumed_writer_starts_a_new_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text(json.dumps({'step': 1, 'loss': 2.0}) + '\n' + '{"step": 2, "lo')
  assert metric_writers.read_jsonl(str(path)) == [{'step': 1, 'loss': 2.0}]
  # The resumed run appends: its first row must not be glued to the torn one.
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write(2, {'loss': 1.5})
  writer.close()
  assert metric_writers.read_jsonl(str(path)) == [{'step': 1, 'loss': 2.0},
                                                   {'step': 2, 'loss': 1.5}]
  assert path.read_text().endswith('"lo\n{"step": 2, "loss": 1.5}\n')


def test_an_intact_file_is_appended_to_as_it_is(tmp_path):
  for step in (1, 2):  # Two runs of one workdir: a resume.
    writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
    writer.write(step, {'loss': 1.0 / step})
    writer.close()
  assert (tmp_path / 'metrics.jsonl').read_text() == (
      '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')


def test_a_disabled_writer_writes_nothing(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path / 'w'), enabled=False)
  writer.write(1, {'loss': 1.0})
  writer.close()
  assert not (tmp_path / 'w').exists()
