"""Per-example classification losses in float32, with timm's semantics.

Every function returns one value per example (shape [batch]); the train step
takes the mean over its rows and `lax.pmean` over devices, which is timm's
`reduction='mean'` over the global batch. Logits of any float dtype are cast
to float32 first, so bfloat16/float16 models get a float32 loss.

  softmax_cross_entropy  soft-target cross-entropy (timm's SoftTargetCrossEntropy;
                         with `smooth_labels` targets also timm's
                         LabelSmoothingCrossEntropy)
  smooth_labels          timm's smoothed one-hot (`timm.data.mixup.one_hot` with
                         on/off values)
  binary_cross_entropy   timm's BinaryCrossEntropy (smoothing, target_threshold)
  distillation_loss      the soft-target term of Bag of Tricks' knowledge
                         distillation (He et al. 2019, section 5.4)
"""

import jax
import jax.numpy as jnp
import optax

from resnet_jax.errors import ConfigError


def smooth_labels(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """Integer labels -> smoothed one-hot targets, float32 [b, num_classes].

  timm's values: off = smoothing / num_classes, on = 1 - smoothing + off
  (the on/off values are computed in Python double precision and rounded once
  to float32, as timm's `torch.full(...).scatter_` does, so they are equal
  bit for bit). `optax.smooth_labels` gives the same numbers up to rounding.

  Args:
    labels: int class indices [b].
    num_classes: width of the one-hot vectors.
    smoothing: label smoothing in [0, 1); 0 gives plain one-hot targets.

  Returns:
    float32 [b, num_classes]; every row sums to 1 (up to rounding).

  Raises:
    ConfigError: smoothing outside [0, 1).
  """
  if not 0.0 <= smoothing < 1.0:
    raise ConfigError(f'label smoothing={smoothing!r} must be in [0, 1) (e.g. 0.1)')
  off = smoothing / num_classes
  on = 1.0 - smoothing + off
  hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
  return jnp.where(hot, jnp.float32(on), jnp.float32(off))


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Cross-entropy with soft targets: -sum_c targets_c * log_softmax(logits)_c.

  timm's SoftTargetCrossEntropy (the loss timm trains with when Mixup/CutMix is
  on), per example. With `smooth_labels(labels, C, s)` as targets it is also
  timm's LabelSmoothingCrossEntropy(s): (1 - s) * nll + s * mean_c(-log p_c).

  Args:
    logits: [b, C], any float dtype (computed in float32).
    targets: [b, C] probabilities (one-hot, smoothed or mixed).

  Returns:
    float32 [b].
  """
  return optax.softmax_cross_entropy(logits.astype(jnp.float32),
                                     targets.astype(jnp.float32))


def binary_cross_entropy(logits: jax.Array, targets: jax.Array, *,
                         smoothing: float = 0.0,
                         target_threshold: float | None = None) -> jax.Array:
  """Per-class sigmoid cross-entropy, as timm's BinaryCrossEntropy.

  timm (timm/loss/binary_cross_entropy.py, defaults weight=None,
  pos_weight=None, sum_classes=False, smooth_dense=False):
    * integer labels [b] become one-hot targets smoothed like `smooth_labels`
      (off = smoothing / C, on = 1 - smoothing + off);
    * dense targets [b, C] (e.g. Mixup/CutMix output, already smoothed there)
      are used as they are: `smoothing` does not apply to them;
    * with `target_threshold`, targets become 1.0 where target > threshold
      and 0.0 elsewhere (timm's `target.gt(threshold)`), after smoothing;
    * loss = binary_cross_entropy_with_logits, reduction='mean' over every
      element of [b, C].
  Here each example's loss is the mean over its C classes, so the mean over
  the batch is timm's loss. timm's `weight`, `pos_weight`, `sum_classes` and
  `smooth_dense` options are not provided.

  Args:
    logits: [b, C], any float dtype (computed in float32).
    targets: int labels [b], or float targets [b, C].
    smoothing: label smoothing for integer labels, in [0, 1).
    target_threshold: binarise targets at this value; None keeps them soft.

  Returns:
    float32 [b].
  """
  logits = logits.astype(jnp.float32)
  if targets.ndim == logits.ndim - 1:
    targets = smooth_labels(targets, logits.shape[-1], smoothing)
  elif targets.shape != logits.shape:
    raise ValueError(f'targets of shape {targets.shape} fit neither labels [b] nor '
                     f'targets like the logits {logits.shape}')
  targets = targets.astype(jnp.float32)
  if target_threshold is not None:
    targets = (targets > target_threshold).astype(jnp.float32)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array,
                      temperature: float) -> jax.Array:
  """Knowledge-distillation term of Bag of Tricks (He et al. 2019, section 5.4).

  Per example, with z the student's logits, r the teacher's and T the
  temperature:

      T^2 * CE(softmax(r / T), softmax(z / T))
        = -T^2 * sum_c softmax(r / T)_c * log softmax(z / T)_c

  The paper's training loss adds it to the hard-label loss with weight one:

      loss = CE(p, softmax(z)) + T^2 * CE(softmax(r / T), softmax(z / T))

  where p is the true distribution (the one-hot or smoothed label; compute
  that first term with `softmax_cross_entropy`). The paper's code (gluon-cv's
  train_imagenet.py, by its first author) uses T = 20 with a ResNet-152
  teacher. The T^2 factor keeps the size of this term's gradients independent
  of T (Hinton et al. 2015).

  The teacher's logits are held constant (`stop_gradient`): gradients flow to
  the student only. This is a cross-entropy, not a KL divergence: it exceeds
  KL(softmax(r/T) || softmax(z/T)) * T^2 (timm's LogitDistillationTask,
  timm/task/distillation.py) by T^2 times the teacher's entropy, a constant
  with respect to the student, so both have the same gradients.

  Args:
    student_logits: z, [b, C], any float dtype (computed in float32).
    teacher_logits: r, [b, C].
    temperature: T > 0.

  Returns:
    float32 [b].

  Raises:
    ConfigError: temperature not positive.
  """
  if not temperature > 0:
    raise ConfigError(f'distillation temperature={temperature!r} must be > 0 '
                      '(Bag of Tricks uses 2)')
  t = float(temperature)
  teacher = jax.nn.softmax(
      jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t, axis=-1)
  student = student_logits.astype(jnp.float32) / t
  return (t * t) * optax.softmax_cross_entropy(student, teacher)

