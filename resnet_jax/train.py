"""Train state, the pmapped train and eval steps, and the training loop.

The steps are pure functions of (state, batch) that run under `jax.pmap` with
axis name `AXIS` ('batch'): gradients and metrics are averaged across all
devices of all hosts with `lax.pmean`/`lax.psum`, and BatchNorm averages its
batch statistics over the same axis, so N devices compute what one device
would compute on the whole global batch.

No TensorFlow is imported here: the tf.data pipeline is only imported when
`train_and_evaluate` reads a tfds or folder dataset.
"""

import dataclasses
import functools
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Iterable

from absl import logging
import flax
from flax import jax_utils
from flax.training import dynamic_scale as dynamic_scale_lib
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from resnet_jax import data
from resnet_jax import metric_writers
from resnet_jax import models
from resnet_jax import optim
from resnet_jax.errors import ConfigError
from resnet_jax.errors import NonFiniteLossError

AXIS = 'batch'
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


class TrainState(train_state.TrainState):
  """Params, optimizer state and step (from flax) plus what a ResNet run needs.

  Attributes:
    batch_stats: BatchNorm running statistics (an empty dict without BatchNorm).
    rng: base PRNG key; step s uses fold_in(rng, s), so a resumed run draws the
      same random numbers as an uninterrupted one.
    dynamic_scale: loss scale for float16 compute, else None.
  """
  batch_stats: Any = None
  rng: jax.Array = None
  dynamic_scale: dynamic_scale_lib.DynamicScale | None = None


def compute_dtype(config: ml_collections.ConfigDict):
  """The jnp dtype named by `config.dtype`."""
  if config.dtype not in DTYPES:
    raise ConfigError(
        f'unknown dtype {config.dtype!r}; valid dtypes: {", ".join(DTYPES)}')
  return DTYPES[config.dtype]


def create_train_state(config: ml_collections.ConfigDict, model: flax.linen.Module,
                       tx: optax.GradientTransformation, image_shape: tuple[int, ...],
                       rng: jax.Array) -> TrainState:
  """Initialises parameters, BatchNorm statistics and optimizer state (one copy)."""
  init_rng, step_rng = jax.random.split(rng)
  dynamic_scale = (dynamic_scale_lib.DynamicScale()
                   if config.dtype == 'float16' else None)

  def create(init_rng, step_rng):
    # train=False: BatchNorm creates its statistics without a cross-device
    # collective, which would need the pmap axis to exist.
    variables = model.init({'params': init_rng},
                           jnp.zeros((1, *image_shape), jnp.float32), train=False)
    state = TrainState.create(
        apply_fn=model.apply, params=variables['params'], tx=tx,
        batch_stats=variables.get('batch_stats', {}), rng=step_rng,
        dynamic_scale=dynamic_scale)
    # create() leaves a weakly typed Python 0; a restored step is int32. One
    # dtype, so the train step compiles once and a resumed run executes the
    # same program as an uninterrupted one.
    return state.replace(step=jnp.zeros((), jnp.int32))

  return _compile_cheaply(create, init_rng, step_rng)(init_rng, step_rng)


def _compile_cheaply(fn: Callable, *args) -> Callable:
  """jit-compiles `fn` for code that runs once, with XLA's optimisations off.

  Initialisation runs a whole forward pass that is then thrown away: fully
  optimised, ResNet-20's takes ~15 s to compile on 2 CPU cores, unoptimised ~2 s.
  """
  lowered = jax.jit(fn).lower(*args)
  try:
    return lowered.compile({'xla_backend_optimization_level': 0,
                            'xla_llvm_disable_expensive_passes': True})
  except Exception:  # pylint: disable=broad-except
    # A backend that does not know these options: compile as usual.
    return lowered.compile()


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, num_classes: int,
                       label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy in float32, with optional label smoothing."""
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if label_smoothing > 0:
    one_hot = optax.smooth_labels(one_hot, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), one_hot)


def correct_topk(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits, else 0.0 (per example)."""
  k = min(k, logits.shape[-1])
  _, top = lax.top_k(logits.astype(jnp.float32), k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               learning_rate_fn: optax.Schedule, preprocess_fn: Callable,
               num_classes: int, label_smoothing: float = 0.0):
  """One optimizer step on this device's share of the global batch (run under pmap).

  Args:
    state: this device's replica of the train state.
    batch: {'image': uint8 [B, H, W, C], 'label': int [B]}.
    learning_rate_fn: the schedule, for logging the step's learning rate.
    preprocess_fn: (rng, images, train) -> float images; normalises and, for the
      on-device data path, augments inside the step.
    num_classes: classifier width.
    label_smoothing: label smoothing for the loss.

  Returns:
    (new_state, metrics): metrics are means over the global batch, identical on
    every device.
  """
  step_rng = jax.random.fold_in(state.rng, state.step)
  device_rng = jax.random.fold_in(step_rng, lax.axis_index(AXIS))
  images = preprocess_fn(device_rng, batch['image'], train=True)
  labels = batch['label']

  def loss_fn(params):
    logits, new_model_state = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        mutable=['batch_stats'])
    loss = jnp.mean(cross_entropy_loss(logits, labels, num_classes, label_smoothing))
    return loss, (logits, new_model_state)

  if state.dynamic_scale is not None:
    # DynamicScale averages the gradients over AXIS itself.
    grad_fn = state.dynamic_scale.value_and_grad(loss_fn, has_aux=True, axis_name=AXIS)
    dynamic_scale, is_finite, (loss, (logits, new_model_state)), grads = grad_fn(
        state.params)
  else:
    (loss, (logits, new_model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, AXIS)

  new_state = state.apply_gradients(
      grads=grads, batch_stats=new_model_state.get('batch_stats', {}))
  if state.dynamic_scale is not None:
    # A step whose scaled gradients overflowed is skipped (keep the old state).
    new_state = new_state.replace(
        opt_state=jax.tree.map(functools.partial(jnp.where, is_finite),
                               new_state.opt_state, state.opt_state),
        params=jax.tree.map(functools.partial(jnp.where, is_finite),
                            new_state.params, state.params),
        dynamic_scale=dynamic_scale)

  metrics = {
      'train_loss': loss,
      'train_top1': jnp.mean(correct_topk(logits, labels, 1)),
      'train_top5': jnp.mean(correct_topk(logits, labels, 5)),
  }
  metrics = lax.pmean(metrics, AXIS)
  metrics['lr'] = learning_rate_fn(state.step)
  return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *,
              preprocess_fn: Callable, num_classes: int):
  """Sums of eval metrics over the global batch, padding masked out (run under pmap).

  Returns:
    {'loss', 'top1', 'top5', 'count'}: sums over all devices' real examples.
  """
  images = preprocess_fn(None, batch['image'], train=False)
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          images, train=False)
  labels = batch['label']
  mask = batch['mask'].astype(jnp.float32)
  sums = {
      'loss': jnp.sum(cross_entropy_loss(logits, labels, num_classes) * mask),
      'top1': jnp.sum(correct_topk(logits, labels, 1) * mask),
      'top5': jnp.sum(correct_topk(logits, labels, 5) * mask),
      'count': jnp.sum(mask),
  }
  return lax.psum(sums, AXIS)


def evaluate(p_eval_step: Callable, state: TrainState,
             eval_batches: Iterable[dict[str, Any]]) -> dict[str, float]:
  """Runs the pmapped eval step over all batches; returns mean loss, top-1, top-5.

  `state` is replicated. Sums stay on the device until the end: one host sync.
  """
  totals = None
  for batch in eval_batches:
    sums = p_eval_step(state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError('the eval split yielded no batches')
  totals = jax.tree.map(lambda x: float(x[0]), jax.device_get(totals))
  count = totals['count']
  return {
      'eval_loss': totals['loss'] / count,
      'eval_top1': totals['top1'] / count,
      'eval_top5': totals['top5'] / count,
      'eval_count': count,
  }


@dataclasses.dataclass
class Experiment:
  """Everything derived from a config before training starts."""
  config: ml_collections.ConfigDict
  meta: Any
  num_classes: int
  model: flax.linen.Module
  steps_per_epoch: int
  num_train_steps: int
  learning_rate_fn: optax.Schedule
  tx: optax.GradientTransformation

  def init_state(self) -> TrainState:
    """A freshly initialised (unreplicated) train state."""
    return create_train_state(self.config, self.model, self.tx, self.meta.image_shape,
                              jax.random.PRNGKey(self.config.seed))

  def preprocess_fn(self) -> Callable:
    return functools.partial(data.device_preprocess, self.config)

  def p_train_step(self) -> Callable:
    return jax.pmap(
        functools.partial(train_step, learning_rate_fn=self.learning_rate_fn,
                          preprocess_fn=self.preprocess_fn(),
                          num_classes=self.num_classes,
                          label_smoothing=self.config.label_smoothing),
        axis_name=AXIS, donate_argnums=(0,))

  def p_eval_step(self) -> Callable:
    return jax.pmap(
        functools.partial(eval_step, preprocess_fn=self.preprocess_fn(),
                          num_classes=self.num_classes),
        axis_name=AXIS)


def replicate(tree):
  """Copies `tree` to every local device, laid out as the pmapped steps return it.

  The steps return the state sharded over a mesh axis named AXIS; an input laid
  out over flax's default axis name would make the second step compile the
  whole train step again.
  """
  return jax_utils.replicate(tree, axis_name=AXIS)


def check_devices(config: ml_collections.ConfigDict) -> None:
  """Fails early when the global batch does not split evenly over the devices."""
  n = jax.device_count()
  for name in ('batch_size', 'eval_batch_size'):
    b = config[name]
    if name == 'eval_batch_size' and b == 0:
      continue
    if b <= 0:
      raise ConfigError(f'{name}={b} must be positive (and a multiple of the {n} devices)')
    if b % n:
      raise ConfigError(
          f'{name}={b} does not divide over the {n} devices '
          f'({jax.process_count()} process(es) x {jax.local_device_count()} local): '
          f'use a multiple of {n}')


def setup_experiment(config: ml_collections.ConfigDict, *,
                     prepare_data: bool = True) -> Experiment:
  """Resolves dataset facts, model, schedule and optimizer from the config.

  Args:
    config: the run config.
    prepare_data: download (when allowed) and prepare the dataset if needed;
      False only reads the facts of an already prepared one (evaluation).
  """
  # Cheap checks first: a typo should not wait for a dataset to be prepared.
  check_devices(config)
  compute_dtype(config)
  models.resolve_spec(config.model)
  optim.validate(config)
  meta = data.prepare(config) if prepare_data else data.dataset_meta(config)
  num_classes = config.num_classes or meta.num_classes
  model = models.create_model(config.model, num_classes=num_classes,
                              dtype=compute_dtype(config), axis_name=AXIS)
  steps_per_epoch = data.steps_per_epoch(config, meta)
  total = optim.num_train_steps(config, steps_per_epoch)
  lr_fn = optim.create_learning_rate_schedule(config, steps_per_epoch)
  tx = optim.create_optimizer(config, lr_fn)
  return Experiment(config=config, meta=meta, num_classes=num_classes, model=model,
                    steps_per_epoch=steps_per_epoch, num_train_steps=total,
                    learning_rate_fn=lr_fn, tx=tx)


def _every(value: int, steps_per_epoch: int) -> int:
  """A period in steps: the value, or one epoch when it is -1."""
  return value if value > 0 else max(1, steps_per_epoch)


class _PreemptionFlag:
  """Set by SIGTERM/SIGINT; the loop checkpoints and exits at the next step."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. in some test runners).
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      # A second Ctrl-C means "now": leave without the checkpoint.
      raise KeyboardInterrupt
    self.signum = signum
    logging.warning('Received %s: saving a checkpoint, then stopping.',
                    signal.Signals(signum).name)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


def _any_process(flag: bool) -> bool:
  """True on every process when the flag is set on any of them."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config as `WORKDIR/config.json` (process 0)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates per the config, resuming from `workdir` if it has checkpoints.

  Args:
    config: the run config (see configs/base.py).
    workdir: where config.json, metrics.jsonl, TensorBoard events and
      checkpoints go.

  Returns:
    The last logged train and eval metrics, plus 'step' and 'preempted'.

  Raises:
    ConfigError: invalid config values.
    NonFiniteLossError: the loss became NaN/inf (the message names the step).
  """
  from resnet_jax import checkpoint  # pylint: disable=g-import-not-at-top

  exp = setup_experiment(config)
  config = exp.config
  is_main = jax.process_index() == 0
  writer = metric_writers.MetricWriter(workdir, enabled=is_main)
  ckpt = checkpoint.CheckpointManager(workdir, config)

  state = exp.init_state()
  resumed_metrics = {}
  try:
    # Resuming wins over init_from: a fine-tuning run that was preempted
    # continues from its own checkpoint, not from the pretrained weights again.
    restored = ckpt.restore_latest(state)
    if restored is not None:
      state, record = restored
      resumed_metrics = record.get('metrics', {})
      logging.info('Resumed from step %d (epoch %.2f) of %s', int(state.step),
                   record.get('epoch', float('nan')), ckpt.directory)
      if config.init_from:
        logging.info('init_from=%s not used: it only initialises a fresh run.',
                     config.init_from)
    elif config.init_from:
      state = checkpoint.init_from(config.init_from, state,
                                   skip_head=config.init_from_skip_head)
  except BaseException:  # E.g. a checkpoint of another model: release orbax first.
    ckpt.close()
    writer.close()
    raise
  start_step = int(state.step)

  resolved = config.copy_and_resolve_references()
  with resolved.unlocked():
    resolved.num_classes = exp.num_classes
    resolved.image_size = int(exp.meta.image_shape[0])
  write_config(resolved, workdir)

  total = exp.num_train_steps
  log_every = max(1, config.log_every_steps)
  eval_every = _every(config.eval_every_steps, exp.steps_per_epoch)
  ckpt_every = _every(config.checkpoint_every_steps, exp.steps_per_epoch)
  logging.info('%s: %d classes, %s images, %d train examples, %d steps/epoch, '
               '%d steps, %d devices', exp.meta.name, exp.num_classes,
               exp.meta.image_shape, exp.meta.num_train, exp.steps_per_epoch, total,
               jax.device_count())

  p_train_step = exp.p_train_step()
  p_eval_step = exp.p_eval_step()
  state = replicate(state)
  train_iter = data.create_train_iter(config, exp.meta, start_step=start_step)

  progress = _progress_bar(total, start_step, enabled=is_main)
  last = {**resumed_metrics, 'step': start_step, 'preempted': False}
  pending = []  # device-side metrics not yet fetched: fetched every log_every steps.
  last_log_step, last_log_time = start_step, None
  step = start_step
  stop = False
  loop_start = time.perf_counter()

  def flush(step):
    nonlocal pending, last_log_step, last_log_time
    if not pending:
      return
    fetched = jax.device_get(pending)
    pending = []
    now = time.perf_counter()
    first = last_log_step + 1
    for i, m in enumerate(fetched):
      loss = float(m['train_loss'][0])
      if not math.isfinite(loss):
        raise NonFiniteLossError(
            f'training loss became {loss} at step {first + i}: lower the learning rate, '
            'set --config.grad_clip_norm, or use --config.dtype=float32. The last '
            'checkpoint before it is kept in the workdir.')
    summary = {k: float(np.mean([m[k][0] for m in fetched])) for k in fetched[0]}
    summary['lr'] = float(fetched[-1]['lr'][0])
    summary['epoch'] = step / exp.steps_per_epoch
    if last_log_time is not None:
      elapsed = now - last_log_time
      summary['images_per_sec'] = (step - last_log_step) * config.batch_size / elapsed
      summary['step_time_ms'] = 1000 * elapsed / (step - last_log_step)
    writer.write(step, summary)
    last.update(summary)
    progress.update(step - progress.n)
    progress.set_postfix(loss=f"{summary['train_loss']:.3f}",
                         top1=f"{summary['train_top1']:.3f}")
    last_log_step, last_log_time = step, now

  if start_step >= total:
    logging.info('Nothing to do: the checkpoint at step %d already reached '
                 'num_train_steps=%d.', start_step, total)
  signal_name = None
  try:
    with _PreemptionFlag() as preemption:
      while step < total:
        batch = next(train_iter)
        state, metrics = p_train_step(state, batch)
        pending.append(metrics)
        step += 1
        if last_log_time is None:
          # One sync after the first step: compile time, and a clean start for
          # the throughput clock.
          flush(step)
          last['compile_s'] = time.perf_counter() - loop_start
        elif step % log_every == 0 or step == total:
          flush(step)
        # Across hosts the flag needs a collective: only at logging steps there.
        if jax.process_count() == 1 or step % log_every == 0:
          stop = _any_process(preemption.signum is not None)
        eval_metrics = None
        if step % eval_every == 0 or step == total:
          flush(step)
          eval_metrics = evaluate(p_eval_step, state,
                                  data.create_eval_iter(config, exp.meta))
          writer.write(step, eval_metrics)
          last_log_time = time.perf_counter()  # Keep eval out of images/s.
          last.update(eval_metrics)
          logging.info('step %d: eval top-1 %.4f, loss %.4f', step,
                       eval_metrics['eval_top1'], eval_metrics['eval_loss'])
        if step % ckpt_every == 0 or step == total or stop:
          flush(step)  # Never checkpoint a state whose loss went non-finite.
          # All processes must call save (orbax synchronises them); each passes
          # its own unreplicated copy, and only process 0 writes the files.
          ckpt.save(step, jax_utils.unreplicate(state),
                    epoch=step / exp.steps_per_epoch, metrics=last,
                    best_metrics=eval_metrics)
        if stop:
          last['preempted'] = True
          signal_name = signal.Signals(preemption.signum).name if preemption.signum else (
              'a preemption on another process')
          break
    flush(step)
  finally:
    # Waits for the save in flight: a preempted run leaves only once its
    # checkpoint is finalized.
    ckpt.close()
    writer.close()
    progress.close()
  last['step'] = step
  if last['preempted']:
    message = (f'Preempted by {signal_name}: saved checkpoint {ckpt.step_path(step)}; '
               'rerun the same command to resume.')
    logging.warning(message)
    if is_main:
      print(message, file=sys.stderr, flush=True)
  return last


def _progress_bar(total: int, initial: int, enabled: bool) -> tqdm.tqdm:
  """A console progress bar with ETA, updated at logging steps only."""
  return tqdm.tqdm(total=total, initial=initial, disable=not enabled, unit='step',
                   dynamic_ncols=True, file=sys.stderr)
