r"""Evaluates a checkpoint on the full eval split: loss, top-1, top-5.

    python -m resnet_jax.evaluate --checkpoint=runs/c20
    python -m resnet_jax.evaluate --checkpoint=runs/c56/checkpoints/64000
    python -m resnet_jax.evaluate --config=configs/stored.py:runs/c56 \
        --checkpoint=runs/c56 --config.data_dir=/data/tensorflow_datasets
    python -m resnet_jax.evaluate --config=configs/cifar10.py:depth=56 --checkpoint=DIR

--checkpoint may be a workdir, its checkpoints/ directory (the newest usable
step is used; unreadable ones are skipped with a warning) or one step directory.
Without --config, the config the run recorded beside its checkpoints
(WORKDIR/config.json) is used; `--config=configs/stored.py:WORKDIR` loads the
same config with overrides. A config must describe the same model as the
checkpoint (a mismatch names the arrays and shapes); it also selects the
dataset and eval split.

Output: one JSON line on stdout (for scripts), a human-readable line on stderr.
Bad input (no checkpoint there, wrong model) exits with status 2 and one line.
"""

import json
import sys

from absl import flags
from ml_collections import config_flags

from resnet_jax import cli
from resnet_jax.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags() -> None:
  """evaluate's flags (see cli.run)."""
  flags.DEFINE_string('checkpoint', None,
                      'A workdir, its checkpoints/ directory, or a step directory.')
  flags.DEFINE_integer('num_batches', -1,
                       'Evaluate on at most this many eval batches; -1 = the whole split.')
  flags.DEFINE_boolean('ema', False, "Evaluate the EMA of the weights (a run with "
                       "--config.ema_decay) instead of the weights.")
  config_flags.DEFINE_config_file(
      'config', None, 'Config of the run (default: the config.json beside the '
      'checkpoint), e.g. configs/cifar10.py:depth=56.', lock_config=True)
  flags.mark_flags_as_required(['checkpoint'])


def evaluate_checkpoint(config, path: str, *, num_batches: int = -1, ema: bool = False
                        ) -> dict:
  """Restores the weights at `path` and evaluates them per `config`.

  Args:
    config: the run config (model, dataset, eval batch size); None = the
      config recorded in the checkpoint's workdir.
    path: workdir, checkpoints directory or step directory.
    num_batches: eval batches to use; -1 = the whole eval split.
    ema: evaluate the checkpoint's EMA of the weights.

  Returns:
    {'checkpoint', 'step', 'epoch', 'eval_loss', 'eval_top1', 'eval_top5',
     'eval_count'}.

  Raises:
    ConfigError: no usable checkpoint, or it does not match the config's model.
  """
  # Imported here so that `--help` and flag errors do not wait for JAX.
  from resnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from resnet_jax import configlib  # pylint: disable=g-import-not-at-top
  from resnet_jax import parallel  # pylint: disable=g-import-not-at-top
  from resnet_jax import specs  # pylint: disable=g-import-not-at-top
  from resnet_jax import train  # pylint: disable=g-import-not-at-top

  # Resolve the path first: a typo fails before any model is built.
  checkpoint.resolve(path)
  if config is None:
    config = configlib.load_stored(path)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.num_eval_batches = num_batches
  run = specs.resolve(config)
  # The dataset must be there already: evaluation never downloads or prepares.
  exp = train.setup_experiment(run, prepare_data=False)
  state = exp.init_state()
  params, batch_stats, info = checkpoint.load_weights(
      path, *parallel.to_host((state.params, state.batch_stats)), ema=ema)
  state = state.replace(params=parallel.replicate(params, exp.mesh),
                        batch_stats=parallel.replicate(batch_stats, exp.mesh))
  metrics = train.evaluate(exp.eval_step(), state, exp.inputs.eval_batches(exp.mesh))
  record = info['record']
  return {'checkpoint': info['path'], 'step': info['step'],
          'epoch': record.get('epoch'), **metrics}


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = FLAGS.config
  if config is not None:
    cli.maybe_initialize_distributed(config)
  result = evaluate_checkpoint(config, FLAGS.checkpoint, num_batches=FLAGS.num_batches,
                               ema=FLAGS.ema)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    print(json.dumps(result), flush=True)
    print(f"step {result['step']}: top-1 {100 * result['eval_top1']:.2f}%, "
          f"top-5 {100 * result['eval_top5']:.2f}%, loss {result['eval_loss']:.4f} "
          f"on {int(result['eval_count'])} examples ({result['checkpoint']})",
          file=sys.stderr, flush=True)
  return 0


if __name__ == '__main__':
  cli.run(main, define_flags)
