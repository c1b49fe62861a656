r"""Evaluates a checkpoint on the full eval split: loss, top-1, top-5.

    python -m resnet_jax.evaluate --config=configs/cifar10.py --checkpoint=runs/c20
    python -m resnet_jax.evaluate --config=configs/cifar10.py:depth=56 \
        --checkpoint=runs/c56/checkpoints/64000

--checkpoint may be a workdir, its checkpoints/ directory (the newest usable
step is used; unreadable ones are skipped with a warning) or one step directory.
The config must describe the same model as the checkpoint (a mismatch names the
arrays and shapes); it also selects the dataset and eval split.

Output: one JSON line on stdout (for scripts), a human-readable line on stderr.
Bad input (no checkpoint there, wrong model) exits with status 2 and one line.
"""

import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from resnet_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', None,
                    'A workdir, its checkpoints/ directory, or a step directory.')
flags.DEFINE_integer('num_batches', -1,
                     'Evaluate on at most this many eval batches; -1 = the whole split.')
config_flags.DEFINE_config_file(
    'config', None, 'Config file of the run, e.g. configs/cifar10.py:depth=56.',
    lock_config=True)
flags.mark_flags_as_required(['config', 'checkpoint'])


def evaluate_checkpoint(config, path: str, *, num_batches: int = -1) -> dict:
  """Restores the weights at `path` and evaluates them per `config`.

  Args:
    config: the run config (model, dataset, eval batch size).
    path: workdir, checkpoints directory or step directory.
    num_batches: eval batches to use; -1 = the whole eval split.

  Returns:
    {'checkpoint', 'step', 'epoch', 'eval_loss', 'eval_top1', 'eval_top5',
     'eval_count'}.

  Raises:
    ConfigError: no usable checkpoint, or it does not match the config's model.
  """
  # Imported here so that `--help` and flag errors do not wait for JAX.
  from resnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from resnet_jax import data  # pylint: disable=g-import-not-at-top
  from resnet_jax import train  # pylint: disable=g-import-not-at-top

  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.num_eval_batches = num_batches
  # Resolve the path first: a typo fails before any model is built.
  checkpoint.resolve(path)
  # The dataset must be there already: evaluation never downloads or prepares.
  exp = train.setup_experiment(config, prepare_data=False)
  state = exp.init_state()
  params, batch_stats, info = checkpoint.load_weights(path, state.params,
                                                      state.batch_stats)
  state = train.replicate(state.replace(params=params, batch_stats=batch_stats))
  metrics = train.evaluate(exp.p_eval_step(), state,
                           data.create_eval_iter(config, exp.meta))
  record = info['record']
  return {'checkpoint': info['path'], 'step': info['step'],
          'epoch': record.get('epoch'), **metrics}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = FLAGS.config
  cli.maybe_initialize_distributed(config)
  result = evaluate_checkpoint(config, FLAGS.checkpoint, num_batches=FLAGS.num_batches)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    print(json.dumps(result), flush=True)
    print(f"step {result['step']}: top-1 {100 * result['eval_top1']:.2f}%, "
          f"top-5 {100 * result['eval_top5']:.2f}%, loss {result['eval_loss']:.4f} "
          f"on {int(result['eval_count'])} examples ({result['checkpoint']})",
          file=sys.stderr, flush=True)
  return 0


if __name__ == '__main__':
  cli.run(main)
