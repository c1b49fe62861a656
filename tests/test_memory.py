"""Tests for resnet_jax.memory: an out-of-memory step is one actionable line, early."""

import os

import jax
import pytest

from resnet_jax import configlib
from resnet_jax import memory
from resnet_jax import specs
from resnet_jax import train
from resnet_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures('fast_compile')


def tiny_experiment(**overrides):
  config = configlib.load(os.path.join(REPO, 'configs/fake_data.py:model=cifar20'), {
      'model.depth': 8, 'image_size': 16, 'batch_size': 32, **overrides})
  return train.setup_experiment(specs.resolve(config))


def test_a_step_larger_than_the_device_is_refused_after_compiling(monkeypatch):
  exp = tiny_experiment()
  need = memory.step_bytes(exp.train_step().lower(exp.abstract_state(),
                                                  exp.abstract_batch()).compile())
  assert need['total'] > need['temporaries'] > 0 and need['arguments'] > 0
  monkeypatch.setattr(memory, 'device_bytes',
                      lambda: (need['total'] // 3, 'a small test device'))
  with pytest.raises(ConfigError) as e:
    exp.compile_train_step()
  message = str(e.value)
  assert '\n' not in message
  for needle in ('out of memory: the train step of cifar-resnet8 at batch 32 (32 per '
                 'device on 1 device(s)), float32, 16x16 images needs',
                 'XLA memory analysis of the compiled step', 'but a small test device has',
                 '--config.dtype=bfloat16', 'or a smaller model'):
    assert needle in message, message
  # The suggested batch is a multiple of the devices that the estimate says fits.
  suggested = int(message.split('--config.batch_size=')[1].split(',')[0])
  assert suggested < 32 and suggested % jax.device_count() == 0


def test_the_step_that_fits_compiles_and_reports_its_size():
  exp = tiny_experiment()
  compiled = exp.compile_train_step()
  fit = memory.describe_fit(compiled)
  assert 0 < fit['step_gib'] < fit['device_gib']


def test_an_allocation_failure_at_run_time_is_one_line():
  exp = tiny_experiment()
  with pytest.raises(ConfigError, match=r'^out of memory running the train step of '
                     r'cifar-resnet8 at batch 32 .*RESOURCE_EXHAUSTED: Out of memory '
                     r'allocating 123 bytes\. Use a smaller --config\.batch_size'):
    with memory.explain_out_of_memory(exp.step_info()):
      raise jax.errors.JaxRuntimeError(
          'RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes\nmore detail')
  with pytest.raises(jax.errors.JaxRuntimeError, match='INTERNAL'):  # Other errors pass.
    with memory.explain_out_of_memory(exp.step_info()):
      raise jax.errors.JaxRuntimeError('INTERNAL: something else')
