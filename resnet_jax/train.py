"""Train state, the train and eval steps, and the training loop.

The steps are written per device, as `jax.pmap` programs used to be, and run
as `jax.jit(jax.shard_map(step, mesh=..., in_specs=..., out_specs=...))` over
the run's mesh (`parallel.py`): the state is replicated (`P()`), batches are
sharded over the mesh's data axes. Gradients and metrics are averaged over all
devices of all hosts with `lax.pmean`/`lax.psum`, and BatchNorm averages its
batch statistics over `parallel.BATCH_AXIS` (all devices, or groups of
`model.bn_group_size`), so N devices compute what one device would compute on
the whole global batch.

The config is resolved once, in `train_and_evaluate`, into a `specs.RunSpec`;
everything below takes specs or their fields. No TensorFlow is imported.
"""

import dataclasses
import functools
import os
import signal
import sys
import time
from typing import Any, Callable, Iterable

from absl import logging
import flax
from flax.training import dynamic_scale as dynamic_scale_lib
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import ml_collections
import optax

from resnet_jax import data
from resnet_jax import ema as ema_lib
from resnet_jax import errors
from resnet_jax import losses
from resnet_jax import memory
from resnet_jax import metric_writers
from resnet_jax import models
from resnet_jax import optim
from resnet_jax import parallel
from resnet_jax import progress
from resnet_jax import recipe as recipe_lib
from resnet_jax import signals
from resnet_jax import specs
from resnet_jax import workdir as workdir_lib
from resnet_jax.augment import mixup as mixup_lib
from resnet_jax.data import placement
from resnet_jax.errors import NonFiniteLossError

# fold_in tags of the step key: each random part draws its own numbers.
_MIXUP, _DROPOUT = 1, 2


class TrainState(train_state.TrainState):
  """Params, optimizer state and step (from flax) plus what a ResNet run needs.

  Attributes:
    batch_stats: BatchNorm running statistics (an empty dict without BatchNorm).
    rng: base PRNG key; step s uses fold_in(rng, s), so a resumed run draws the
      same random numbers as an uninterrupted one.
    dynamic_scale: loss scale for float16 compute, else None.
    ema: {'params', 'batch_stats'}, the EMA of the weights and statistics in
      float32 (recipe.ema), else None.
  """
  batch_stats: Any = None
  rng: jax.Array = None
  dynamic_scale: dynamic_scale_lib.DynamicScale | None = None
  ema: Any = None


def _state_initializer(model: flax.linen.Module, tx: optax.GradientTransformation,
                       image_shape: tuple[int, ...], ema: bool = False
                       ) -> Callable[[jax.Array], TrainState]:
  """rng -> a fresh TrainState (params, BatchNorm statistics, optimizer state)."""
  dynamic_scale = (dynamic_scale_lib.DynamicScale()
                   if model.dtype == jnp.float16 else None)

  def create(rng):
    init_rng, step_rng = jax.random.split(rng)
    # train=False: BatchNorm creates its statistics without a cross-device
    # collective (no mesh axis is bound here).
    variables = model.init({'params': init_rng},
                           jnp.zeros((1, *image_shape), jnp.float32), train=False)
    batch_stats = variables.get('batch_stats', {})
    state = TrainState.create(
        apply_fn=model.apply, params=variables['params'], tx=tx,
        batch_stats=batch_stats, rng=step_rng, dynamic_scale=dynamic_scale,
        ema=ema_lib.init_ema({'params': variables['params'], 'batch_stats': batch_stats})
        if ema else None)
    # create() leaves a weakly typed Python 0; a restored step is int32. One
    # dtype, so the train step compiles once and a resumed run executes the
    # same program as an uninterrupted one.
    return state.replace(step=jnp.zeros((), jnp.int32))

  return create


def create_train_state(model: flax.linen.Module, tx: optax.GradientTransformation,
                       image_shape: tuple[int, ...], rng: jax.Array,
                       mesh: jax.sharding.Mesh | None = None, ema: bool = False
                       ) -> TrainState:
  """Initialises parameters, BatchNorm statistics, optimizer state (and the EMA).

  With a mesh, the state comes out replicated over it (the train step's input
  layout); without, on the default device.
  """
  create = _state_initializer(model, tx, image_shape, ema)
  out_shardings = parallel.replicated(mesh) if mesh is not None else None
  return _compile_cheaply(create, out_shardings, rng)(rng)


def _compile_cheaply(fn: Callable, out_shardings, *args) -> Callable:
  """jit-compiles `fn` for code that runs once, with XLA's optimisations off.

  Initialisation runs a whole forward pass that is then thrown away: fully
  optimised, ResNet-20's takes ~15 s to compile on 2 CPU cores, unoptimised ~2 s.
  """
  lowered = jax.jit(fn, out_shardings=out_shardings).lower(*args)
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


def example_loss(logits: jax.Array, labels: jax.Array, targets: jax.Array | None,
                 teacher_logits: jax.Array | None, num_classes: int,
                 recipe: recipe_lib.RecipeSpec) -> jax.Array:
  """The recipe's per-example training loss (float32).

  `targets`: Mixup/CutMix's soft targets (label smoothing folded in), or None
  (the labels, smoothed here). 'softmax' without targets is exactly
  `cross_entropy_loss`; 'bce' is timm's BinaryCrossEntropy; a teacher adds
  the Bag-of-Tricks distillation term.
  """
  if recipe.loss == 'bce':
    loss = losses.binary_cross_entropy(
        logits, labels if targets is None else targets,
        smoothing=recipe.label_smoothing if targets is None else 0.0,
        target_threshold=recipe.bce_target_threshold or None)
  elif targets is not None:
    loss = losses.softmax_cross_entropy(logits, targets)
  else:
    loss = cross_entropy_loss(logits, labels, num_classes, recipe.label_smoothing)
  if teacher_logits is not None:
    loss = loss + losses.distillation_loss(logits, teacher_logits, recipe.distill_temperature)
  return loss


def correct_topk(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits, else 0.0 (per example)."""
  k = min(k, logits.shape[-1])
  _, top = lax.top_k(logits.astype(jnp.float32), k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def train_step(state: TrainState, batch: dict[str, jax.Array], teacher=None, *,
               learning_rate_fn: optax.Schedule, preprocess_fn: Callable,
               num_classes: int, recipe: recipe_lib.RecipeSpec = recipe_lib.RecipeSpec(),
               augment_in_step: bool = False, accumulation: int = 1,
               dropout: bool = False, teacher_apply: Callable | None = None):
  """One optimizer step on this device's share of the global batch.

  The per-device program: runs under `jax.shard_map` over the mesh's data
  axes (see `Experiment.train_step`).

  Args:
    state: the (replicated) train state.
    batch: this device's examples: {'image': uint8 [b, H, W, C], 'label': int [b]}.
    teacher: the teacher's variables (replicated), with `recipe.teacher`.
    learning_rate_fn: the schedule, for logging the step's learning rate.
    preprocess_fn: `placement.preprocess` with the dataset's statistics.
    num_classes: classifier width.
    recipe: the loss and its parts (Mixup/CutMix over the global batch, EMA,
      distillation).
    augment_in_step: crop and flip the images here (resident 'cifar' data),
      example r of the global batch from fold_in(step key, r).
    accumulation: k > 1 computes the gradient over k micro-batches of b / k in
      turn (BatchNorm normalising each) and applies their mean once.
    dropout: the model draws drop-path / dropout masks (flax's 'dropout' rng).
    teacher_apply: (teacher variables, images) -> the teacher's logits.

  Returns:
    (new_state, metrics): metrics are means over the global batch, identical on
    every device.
  """
  axes = parallel.DATA_AXES
  step_rng = jax.random.fold_in(state.rng, state.step)
  labels = batch['label']
  images = preprocess_fn(
      batch['image'], augment_key=step_rng if augment_in_step else None,
      first_row=lax.axis_index(axes) * labels.shape[0])
  targets = teacher_logits = None
  if recipe.mixup is not None:
    images, targets = mixup_lib.mix_batch(jax.random.fold_in(step_rng, _MIXUP), images,
                                          labels, recipe.mixup, num_classes, axis_name=axes)
  if teacher is not None:
    teacher_logits = lax.stop_gradient(teacher_apply(teacher, images).astype(jnp.float32))
  dropout_rng = jax.random.fold_in(jax.random.fold_in(step_rng, _DROPOUT),
                                   lax.axis_index(axes))

  def loss_fn(params, batch_stats, images, labels, targets, teacher_logits, rng):
    logits, new_model_state = state.apply_fn(
        {'params': params, 'batch_stats': batch_stats}, images, train=True,
        mutable=['batch_stats'], **({'rngs': {'dropout': rng}} if dropout else {}))
    loss = jnp.mean(example_loss(logits, labels, targets, teacher_logits, num_classes,
                                 recipe))
    return loss, (logits, new_model_state.get('batch_stats', {}))

  # Differentiate with respect to this device's copy of the parameters, so the
  # gradient is this device's own (shard_map would otherwise sum the gradients
  # of a replicated input over the devices implicitly); the explicit pmean
  # below then averages them, as the pmapped step did.
  params = lax.pcast(state.params, axes, to='varying')
  inputs = (images, labels, targets, teacher_logits)
  if state.dynamic_scale is not None:
    # DynamicScale averages the gradients over the axes itself.
    grad_fn = state.dynamic_scale.value_and_grad(
        lambda p: loss_fn(p, state.batch_stats, *inputs, dropout_rng), has_aux=True,
        axis_name=axes)
    dynamic_scale, is_finite, (loss, (logits, batch_stats)), grads = grad_fn(params)
  elif accumulation == 1:
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, state.batch_stats, *inputs, dropout_rng)
    grads = lax.pmean(grads, axes)
  else:
    split = lambda x: None if x is None else x.reshape(accumulation, -1, *x.shape[1:])

    def micro(carry, xs):
      grads, batch_stats, i = carry
      (loss, (logits, batch_stats)), g = jax.value_and_grad(loss_fn, has_aux=True)(
          params, batch_stats, *xs, jax.random.fold_in(dropout_rng, i))
      return (jax.tree.map(jnp.add, grads, g), batch_stats, i + 1), (loss, logits)

    zeros = jax.tree.map(jnp.zeros_like, params)
    # Each group's statistics come out of its own examples (varying over groups).
    stats = lax.pcast(state.batch_stats, parallel.BN_GROUP_AXIS, to='varying')
    (grads, batch_stats, _), (micro_losses, logits) = lax.scan(
        micro, (zeros, stats, jnp.int32(0)), tuple(map(split, inputs)))
    grads = lax.pmean(jax.tree.map(lambda g: g / accumulation, grads), axes)
    loss, logits = jnp.mean(micro_losses), logits.reshape(-1, logits.shape[-1])

  # Within a BatchNorm group the running statistics agree; across groups
  # (bn_group_size) they are averaged, so the state stays replicated.
  batch_stats = lax.pmean(batch_stats, parallel.BN_GROUP_AXIS)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if state.dynamic_scale is not None:
    # A step whose scaled gradients overflowed is skipped (keep the old state).
    new_state = new_state.replace(
        opt_state=jax.tree.map(functools.partial(jnp.where, is_finite),
                               new_state.opt_state, state.opt_state),
        params=jax.tree.map(functools.partial(jnp.where, is_finite),
                            new_state.params, state.params),
        dynamic_scale=dynamic_scale)
  if recipe.ema is not None:
    new_state = new_state.replace(ema=ema_lib.update_ema(
        state.ema, {'params': new_state.params, 'batch_stats': new_state.batch_stats},
        ema_lib.ema_decay(new_state.step, recipe.ema)))

  metrics = {
      'train_loss': loss,
      'train_top1': jnp.mean(correct_topk(logits, labels, 1)),
      'train_top5': jnp.mean(correct_topk(logits, labels, 5)),
  }
  metrics = lax.pmean(metrics, axes)
  metrics['lr'] = learning_rate_fn(state.step)
  return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *,
              preprocess_fn: Callable, num_classes: int):
  """Sums of eval metrics over the global batch, padding masked out (per device).

  Returns:
    {'loss', 'top1', 'top5', 'count'}: sums over all devices' real examples;
    with an EMA also 'ema_loss', 'ema_top1', 'ema_top5' of its weights.
  """
  images = preprocess_fn(batch['image'])
  labels = batch['label']
  mask = batch['mask'].astype(jnp.float32)

  def sums(variables, prefix=''):
    logits = state.apply_fn(variables, images, train=False)
    return {f'{prefix}loss': jnp.sum(cross_entropy_loss(logits, labels, num_classes) * mask),
            f'{prefix}top1': jnp.sum(correct_topk(logits, labels, 1) * mask),
            f'{prefix}top5': jnp.sum(correct_topk(logits, labels, 5) * mask)}

  out = {**sums({'params': state.params, 'batch_stats': state.batch_stats}),
         'count': jnp.sum(mask)}
  if state.ema is not None:
    out.update(sums(state.ema, 'ema_'))
  return lax.psum(out, parallel.DATA_AXES)


def evaluate(eval_step_fn: Callable, state: TrainState,
             eval_batches: Iterable[dict[str, Any]]) -> dict[str, float]:
  """Runs the eval step over all batches: mean loss, top-1, top-5 (and the EMA's).

  Sums stay on the devices until the end: one host sync.
  """
  totals = None
  for batch in eval_batches:
    sums = eval_step_fn(state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError('the eval split yielded no batches')
  totals = jax.tree.map(float, parallel.to_host(totals))
  count = totals.pop('count')
  return {**{f'eval_{k}': v / count for k, v in totals.items()}, 'eval_count': count}


@dataclasses.dataclass
class Experiment:
  """Everything derived from a RunSpec before training starts."""
  run: specs.RunSpec
  inputs: data.Input
  model: flax.linen.Module
  steps_per_epoch: int
  num_train_steps: int
  learning_rate_fn: optax.Schedule
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  teacher: Any = None  # (model, host variables) of recipe.teacher, else None.

  @property
  def meta(self) -> data.DatasetMeta:
    return self.inputs.meta

  @property
  def num_classes(self) -> int:
    return self.inputs.meta.num_classes

  def step_info(self) -> memory.StepInfo:
    return memory.StepInfo(model=self.model.spec.label,
                           batch_size=self.run.data.batch_size, dtype=self.run.dtype,
                           image_size=self.meta.image_shape[0])

  def init_state(self) -> TrainState:
    """A freshly initialised train state, replicated over the mesh."""
    return create_train_state(self.model, self.tx, self.meta.image_shape,
                              jax.random.PRNGKey(self.run.data.seed), self.mesh,
                              ema=self.run.recipe.ema is not None)

  def abstract_state(self) -> TrainState:
    """The train state's shapes, dtypes and shardings; nothing is computed."""
    create = _state_initializer(self.model, self.tx, self.meta.image_shape,
                                self.run.recipe.ema is not None)
    shapes = jax.eval_shape(create, jax.random.PRNGKey(self.run.data.seed))
    replicated = parallel.replicated(self.mesh)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)

  def preprocess_fn(self) -> Callable:
    return functools.partial(placement.preprocess, mean=self.meta.mean, std=self.meta.std)

  def abstract_batch(self, *, train: bool = True) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and shardings of one global batch (to compile without data)."""
    b = self.run.data.batch_size if train else self.run.data.eval_batch_size
    sharding = parallel.data_sharding(self.mesh)
    batch = {'image': jax.ShapeDtypeStruct((b, *self.meta.image_shape), jnp.uint8,
                                           sharding=sharding),
             'label': jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sharding)}
    if not train:
      batch['mask'] = jax.ShapeDtypeStruct((b,), jnp.bool_, sharding=sharding)
    return batch

  def step_args(self) -> tuple:
    """What the train step takes after (state, batch): the teacher's variables."""
    return self._step_args

  @functools.cached_property
  def _step_args(self) -> tuple:
    # Copied onto the devices once, however often compilation and the loop ask.
    if self.teacher is None:
      return ()
    return (parallel.replicate(self.teacher[1], self.mesh),)

  def train_step(self, *, donate: bool = True) -> Callable:
    """The jitted train step over the mesh: (state, batch, *step_args) -> (state, metrics).

    The shardings are fixed: an input laid out otherwise is an error, never a
    silent second compilation. With `donate`, the input state's buffers are
    reused for the output (one train state less in memory).
    """
    spec = self.model.spec
    teacher_apply = None
    if self.teacher is not None:
      model = self.teacher[0]
      teacher_apply = lambda variables, images: model.apply(variables, images, train=False)
    step = functools.partial(train_step, learning_rate_fn=self.learning_rate_fn,
                             preprocess_fn=self.preprocess_fn(),
                             num_classes=self.num_classes, recipe=self.run.recipe,
                             augment_in_step=self.inputs.augment_in_step,
                             accumulation=self.run.optim.grad_accumulation_steps,
                             dropout=bool(spec.drop_path_rate or spec.dropout_rate),
                             teacher_apply=teacher_apply)
    return self._jit(step, out_specs=(P(), P()), donate=donate,
                     extra=int(self.teacher is not None))

  def eval_step(self) -> Callable:
    """The jitted eval step over the mesh: (state, batch) -> metric sums."""
    step = functools.partial(eval_step, preprocess_fn=self.preprocess_fn(),
                             num_classes=self.num_classes)
    return self._jit(step, out_specs=P(), donate=False)

  def _jit(self, step: Callable, out_specs, donate: bool, extra: int = 0) -> Callable:
    replicated = parallel.replicated(self.mesh)
    data_sharding = parallel.data_sharding(self.mesh)
    sharded = jax.shard_map(step, mesh=self.mesh,
                            in_specs=(P(), P(parallel.DATA_AXES)) + (P(),) * extra,
                            out_specs=out_specs)
    return jax.jit(sharded, in_shardings=(replicated, data_sharding) + (replicated,) * extra,
                   out_shardings=replicated, donate_argnums=(0,) if donate else ())

  def compile_train_step(self, *, donate: bool = True):
    """Compiles the train step once, ahead of time, and checks that it fits.

    Returns:
      The compiled executable: calling it never compiles again.

    Raises:
      ConfigError: the step needs more memory than the device has (one line
        naming the model, batch, dtype and what to change).
    """
    lowered = self.train_step(donate=donate).lower(self.abstract_state(),
                                                   self.abstract_batch(), *self.step_args())
    with memory.explain_out_of_memory(self.step_info()):
      compiled = lowered.compile()
    memory.check_fits(compiled, self.step_info())
    return compiled


def setup_experiment(run: specs.RunSpec, *, prepare_data: bool = True) -> Experiment:
  """Opens the data and builds the model, schedule, optimizer and mesh of a run.

  Args:
    run: the resolved run spec (`specs.resolve(config)`).
    prepare_data: prepare (and download, when allowed) a tfds dataset that is
      not prepared; False only opens a prepared one (evaluation).
  """
  inputs = data.open_input(run.data, prepare=prepare_data)
  model = models.create_model(run.model, num_classes=inputs.meta.num_classes,
                              dtype=run.dtype, axis_name=parallel.BATCH_AXIS,
                              cpu_fast_paths=run.cpu_fast_paths)
  steps_per_epoch = inputs.steps_per_epoch
  total = run.loop.total_steps(steps_per_epoch)
  lr_fn = optim.create_learning_rate_schedule(run.optim, steps_per_epoch, total)
  tx = optim.create_optimizer(run.optim, lr_fn)
  teacher = None
  if run.recipe.teacher:
    from resnet_jax import export  # pylint: disable=g-import-not-at-top
    restored = export.restore(run.recipe.teacher, cpu_fast_paths=run.cpu_fast_paths)
    if restored.num_classes != inputs.meta.num_classes:
      raise errors.ConfigError(
          f'teacher={run.recipe.teacher!r} predicts {restored.num_classes} classes, this run '
          f'{inputs.meta.num_classes}: distillation needs the same classes')
    teacher = (restored.model, restored.variables)
  return Experiment(run=run, inputs=inputs, model=model, steps_per_epoch=steps_per_epoch,
                    num_train_steps=total, learning_rate_fn=lr_fn, tx=tx,
                    mesh=parallel.make_mesh(run.bn_group_size), teacher=teacher)


def _restore_or_initialise(exp: Experiment, ckpt, *,
                           allow_fresh_start: bool = False) -> tuple[TrainState, dict]:
  """The state to start from: the newest checkpoint, else init_from, else fresh.

  Resuming wins over init_from: a fine-tuning run that was preempted continues
  from its own checkpoint, not from the pretrained weights again.

  Raises:
    ConfigError: the workdir had checkpoints and none is usable (they are moved
      aside), unless `allow_fresh_start`: a run never starts over from step 0
      without being asked to.
  """
  from resnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  loop = exp.run.loop
  state = exp.init_state()
  restored = ckpt.restore_latest(state)
  if restored is not None:
    host_state, record = restored
    logging.info('Resumed from step %d (epoch %.2f) of %s', int(host_state.step),
                 record.get('epoch', float('nan')), ckpt.directory)
    if loop.init_from:
      logging.info('init_from=%s not used: it only initialises a fresh run.',
                   loop.init_from)
    return parallel.replicate(host_state, exp.mesh), record.get('metrics', {})
  unusable = ckpt.corrupt_dirs()
  if unusable and not allow_fresh_start:
    raise errors.ConfigError(_no_usable_checkpoint(ckpt, unusable))
  if unusable:
    logging.warning('No usable checkpoint in %s (unusable ones: %s): starting from '
                    'step 0 as --allow_fresh_start asks.', ckpt.directory,
                    ', '.join(os.path.basename(d) for d in unusable))
  if loop.init_from:
    params, batch_stats = checkpoint.init_from(loop.init_from, state,
                                               skip_head=loop.init_from_skip_head,
                                               ema=loop.init_from_ema)
    state = state.replace(params=parallel.replicate(params, exp.mesh),
                          batch_stats=parallel.replicate(batch_stats, exp.mesh))
    if state.ema is not None:  # The EMA starts from the warm start too.
      state = state.replace(ema=ema_lib.init_ema(
          {'params': state.params, 'batch_stats': state.batch_stats}))
  return state, {}


def _no_usable_checkpoint(ckpt, unusable: list[str]) -> str:
  """Why a workdir whose checkpoints are all unusable is refused, and the ways on."""
  listed = ', '.join(os.path.basename(d) for d in unusable[:4]) + (
      f' ... ({len(unusable)} in all)' if len(unusable) > 4 else '')
  if ckpt.moved_aside:
    _, _, reason = ckpt.moved_aside[0]
    now = (f'{len(ckpt.moved_aside)} checkpoint(s) could not be read (step '
           f'{ckpt.moved_aside[0][0]}: {reason}) and were moved aside: ')
  else:
    now = 'an earlier run moved every checkpoint aside as unreadable: '
  return (f'no usable checkpoint in {ckpt.directory}: {now}{listed}. Training did not '
          'start, so as not to start over from step 0 unasked: rerun with '
          '--allow_fresh_start to train this workdir from step 0 (the moved '
          'checkpoints stay), or use another --workdir')


def _kept_checkpoints(workdir: str) -> str:
  """What a rerun of `workdir` resumes from, read from disk (no orbax needed)."""
  from resnet_jax.checkpoint import manager  # pylint: disable=g-import-not-at-top
  steps = manager.step_dirs(os.path.join(workdir, workdir_lib.CHECKPOINTS))
  return f'it resumes from step {steps[-1]}' if steps else 'it starts from step 0'


class _StartUp:
  """What start-up is doing, for the line a signal stops it with.

  Each stage first acts on a signal whose raise was dropped (see signals.py).
  """

  def __init__(self, stop: signals.SignalFlag):
    self._stop = stop
    self.doing = 'opening the workdir'

  def now(self, doing: str) -> None:
    self._stop.check()
    self.doing = doing


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False, allow_fresh_start: bool = False,
                       stop: signals.SignalFlag | None = None) -> dict[str, Any]:
  """Trains and evaluates per the config, resuming from `workdir` if it has checkpoints.

  Args:
    config: the run config (see configs/base.py).
    workdir: where config.json, metrics.jsonl, TensorBoard events and
      checkpoints go.
    allow_config_change: resume even where the workdir's checkpoints were
      written under a config that differs in a field that changes the run.
    allow_fresh_start: train from step 0 where every checkpoint of the workdir
      is unusable (else refused).
    stop: the SignalFlag the program installed at its start, in stop_at_once
      mode (`main`); None installs one for this call.

  Returns:
    The last logged train and eval metrics, plus 'step', 'preempted' and
    'compile_s'.

  Raises:
    ConfigError: invalid config values, a workdir in use or holding another
      run's config, a step that does not fit in memory, no usable checkpoint,
      a full disk (OutOfSpaceError) or a save the file system refused.
    NonFiniteLossError: the loss became NaN/inf (the message names the step).
    errors.StoppedBySignal: SIGTERM/SIGINT before the first step (nothing to
      save; the message says what start-up was doing).
    errors.InterruptedAgain: a second Ctrl-C (a KeyboardInterrupt).
  """
  if stop is None:
    with signals.SignalFlag(stop_at_once=True, second_interrupt_raises=True) as own:
      return train_and_evaluate(config, workdir, allow_config_change=allow_config_change,
                                allow_fresh_start=allow_fresh_start, stop=own)
  phase = _StartUp(stop)
  try:
    return _train_and_evaluate(config, workdir, allow_config_change, allow_fresh_start,
                               stop, phase)
  except errors.StoppedBySignal as e:
    raise errors.StoppedBySignal(e.signum, (
        f'Preempted by {errors.signal_name(e.signum)} while {phase.doing}, before any '
        f'training step: nothing to save, nothing lost; rerun the same command '
        f'({_kept_checkpoints(workdir)}).')) from None


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        allow_config_change: bool, allow_fresh_start: bool,
                        stop: signals.SignalFlag, phase: _StartUp) -> dict[str, Any]:
  # orbax is imported only by the commands that checkpoint.
  from resnet_jax import checkpoint  # pylint: disable=g-import-not-at-top

  run = specs.resolve(config)
  phase.now('opening the workdir')
  # The workdir before the data: it is locked and its config checked first.
  run_dir = workdir_lib.open_run(workdir, config, allow_config_change=allow_config_change)
  with run_dir:
    phase.now('preparing the data')
    exp = setup_experiment(run)
    phase.now('compiling the train step')
    start = time.perf_counter()
    compiled_step = exp.compile_train_step()
    compile_s = time.perf_counter() - start
    eval_step_fn = exp.eval_step()
    is_main = jax.process_index() == 0
    phase.now('restoring the checkpoint')
    ckpt = checkpoint.CheckpointManager(workdir, keep=run.loop.keep_checkpoints)
    writer = None
    try:
      state, resumed_metrics = _restore_or_initialise(exp, ckpt,
                                                      allow_fresh_start=allow_fresh_start)
      start_step = int(parallel.to_host(state.step))
      phase.now('recording the config')
      run_dir.record_config(_resolved(config, exp.meta), exp.meta, start_step)
      writer = metric_writers.MetricWriter(workdir, enabled=is_main)
      phase.now('starting the input pipeline')
      result = _loop(exp, compiled_step, eval_step_fn, state, start_step, ckpt, writer,
                     resumed_metrics, stop)
      # The last checkpoint is waited for: a run that says it finished has it.
      ckpt.close()
    except KeyboardInterrupt:
      # A second Ctrl-C: quit without waiting for the save in progress.
      raise errors.InterruptedAgain(
          f'interrupted again: quit at once, without waiting for a checkpoint in '
          f'progress. {ckpt.kept()}: rerun the same command to resume from it') from None
    except NonFiniteLossError as e:
      ckpt.close(check=False)  # The save of a state from before it completes.
      raise NonFiniteLossError(_non_finite_message(e, run, ckpt)) from None
    except Exception as e:
      ckpt.close(check=False)
      if isinstance(e, errors.ConfigError) or not errors.is_out_of_space(e):
        raise
      # Another write of the run (metrics, config) found the disk full.
      raise errors.OutOfSpaceError(
          f'no space left on device: {_one_line(e)}, so the run stopped. '
          f'{ckpt.kept()}: free space there, then rerun the same command to resume '
          'from it') from None
    except BaseException:
      ckpt.close(check=False)
      raise
    finally:
      if writer is not None:
        writer.close()
  result['compile_s'] = compile_s
  return result


def _one_line(error: BaseException) -> str:
  """The innermost error of a chain, on one line."""
  innermost = errors.chain(error)[-1]
  text = ' '.join(str(innermost).split())
  return text if len(text) <= 300 else text[:300] + '...'


def _non_finite_message(error: NonFiniteLossError, run: specs.RunSpec, ckpt) -> str:
  """The line of a non-finite loss: what to change (only what this run does not
  do already) and what there is to resume from (the checkpoints precede it:
  the loss is checked before every save)."""
  changes = [f'lower --config.learning_rate (now {run.optim.learning_rate:g})']
  if not run.optim.grad_clip_norm:
    changes.append('set --config.grad_clip_norm')
  if run.dtype != 'float32':
    changes.append(f'use --config.dtype=float32 (now {run.dtype})')
  if len(changes) > 1:
    changes[-1] = 'or ' + changes[-1]
  change = ', '.join(changes)
  steps = ckpt.finalized_steps()
  if not steps:
    return f'{error}: {change}. No checkpoint was written before it: rerun with the change'
  return (f'{error}: {change}. The checkpoint of step {steps[-1]} '
          f'({ckpt.step_path(steps[-1])}), from before it, is kept: rerun with the change '
          'and --allow_config_change to resume from it, or with a new --workdir to '
          'start over')


def _resolved(config: ml_collections.ConfigDict,
              meta: data.DatasetMeta) -> ml_collections.ConfigDict:
  """The config with what was read from the data filled in (config.json)."""
  resolved = config.copy_and_resolve_references()
  with resolved.unlocked():
    resolved.num_classes = meta.num_classes
    resolved.image_size = int(meta.image_shape[0])
    resolved.mean, resolved.std = meta.mean, meta.std
  return resolved


def _announce(signum: int) -> None:
  again = (' (Ctrl-C again to quit at once without it)'
           if signum == signal.SIGINT else '')
  logging.warning('Received %s: saving a checkpoint, then stopping%s.',
                  errors.signal_name(signum), again)


def _announce_finished(signum: int) -> None:
  logging.warning('Received %s: training has finished; waiting for its last '
                  'checkpoint, then exiting.', errors.signal_name(signum))


def _loop(exp: Experiment, compiled_step, eval_step_fn, state: TrainState,
          start_step: int, ckpt, writer, resumed_metrics: dict,
          stop: signals.SignalFlag) -> dict[str, Any]:
  """The training loop proper: step, log, evaluate, checkpoint, stop on a signal.

  From the first step on, a signal stops the run after the step in progress,
  once its checkpoint is written; a background save that fails stops it at
  the next step (every step on one host, at logging steps across hosts).
  """
  loop = exp.run.loop
  total = exp.num_train_steps
  every = functools.partial(progress.itstime, total=total,
                            steps_per_epoch=exp.steps_per_epoch)
  logging.info('%s: %d classes, %s images, %d train examples, %d steps/epoch, '
               '%d steps, %s', exp.meta.name, exp.num_classes, exp.meta.image_shape,
               exp.meta.num_train, exp.steps_per_epoch, total,
               parallel.describe(exp.mesh))
  if start_step >= total:
    logging.info('Nothing to do: the checkpoint at step %d already reached '
                 'num_train_steps=%d.', start_step, total)
  train_iter = exp.inputs.train_batches(exp.mesh, start_step=start_step)
  step_args = exp.step_args()
  log = progress.TrainLog(writer, total=total, start_step=start_step,
                          batch_size=exp.run.data.batch_size,
                          steps_per_epoch=exp.steps_per_epoch,
                          enabled=jax.process_index() == 0)
  last = {**resumed_metrics, 'step': start_step, 'preempted': False}
  step = start_step
  stopped_by = None
  try:
    # From here on there is a state that a stop saves first.
    stop.check()
    stop.on_signal = _announce
    stop.stop_at_once = False
    while step < total:
      with memory.explain_out_of_memory(exp.step_info()):
        state, metrics = compiled_step(state, next(train_iter), *step_args)
      step += 1
      log.append(step, metrics)
      if step == start_step + 1 or every(step, loop.log_every_steps):
        last.update(log.flush(step))  # The only host sync of the loop.
      # Across hosts these need a collective: only at logging steps there.
      if jax.process_count() == 1 or every(step, loop.log_every_steps):
        if parallel.any_process(stop.received is not None):
          stopped_by = stop.received or 'a preemption on another process'
        failure = ckpt.agree(ckpt.failure())  # A collective across hosts.
        if failure is not None:
          raise failure
      eval_metrics = None
      if every(step, loop.eval_every_steps):
        last.update(log.flush(step))
        eval_metrics = evaluate(eval_step_fn, state, exp.inputs.eval_batches(exp.mesh))
        log.write_eval(step, eval_metrics)
        last.update(eval_metrics)
      if every(step, loop.checkpoint_every_steps) or stopped_by:
        last.update(log.flush(step))  # Never checkpoint a state whose loss went non-finite.
        # All processes call save (orbax synchronises them); the state is
        # replicated, and process 0 writes the files.
        ckpt.save(step, state, epoch=step / exp.steps_per_epoch, metrics=last,
                  best_metrics=eval_metrics)
      if stopped_by:
        ckpt.wait()  # The line below says it is saved: it must be.
        break
    last.update(log.flush(step))
    stop.on_signal = _announce_finished
  finally:
    train_iter.close()  # Stops the loader's worker processes.
    log.close()
  last['step'] = step
  if stopped_by:
    last['preempted'] = True
    name = errors.signal_name(stopped_by) if isinstance(stopped_by, int) else stopped_by
    message = (f'Preempted by {name}: saved checkpoint {ckpt.step_path(step)}; '
               'rerun the same command to resume.')
    logging.warning(message)
    if jax.process_index() == 0:
      print(message, file=sys.stderr, flush=True)
  return last
