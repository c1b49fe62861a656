"""The ResNet network (stem, stages of residual blocks, head) and create_model.

The network is built from a resolved `ResNetSpec` (registry.py); this module
only turns the spec into layers. Parameters are grouped by part, which the
summary uses to report each part separately:

  params['stem'], params['stage1'] ... params['stageN'], params['head']
  stage k holds 'block1'...; a block holds conv1.., norm1.., 'se' (fc1, fc2)
  with squeeze-and-excitation, and 'shortcut' (conv, norm) when it projects;
  the stem holds 'pool_conv', 'pool_norm' with stem_pool='conv'.

Stochastic depth and dropout draw from the 'dropout' rng collection in
training only: `model.apply(..., train=True, rngs={'dropout': key})`. With
both rates 0 (the default) no such module exists and no rng is needed.

`model.apply(..., features=...)` returns intermediate outputs instead of the
logits (features.py); without it the network computes exactly what it did
before that option existed.
"""

import functools
import numbers
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax.models import blocks
from resnet_jax.models import fast_paths
from resnet_jax.models import features as features_lib
from resnet_jax.errors import ConfigError
from resnet_jax.models.registry import ResNetSpec, resolve_spec

ModuleDef = Any

# He et al. 2015 init, fan-out mode (torchvision's kaiming_normal_(mode='fan_out')).
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
BN_EPSILON = 1e-5  # torchvision's; flax's own default (1e-5) is kept explicit.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def canonical_dtype(dtype: Any) -> Any:
  """jnp.float32 / bfloat16 / float16 from a name or dtype; ConfigError otherwise."""
  for name, d in DTYPES.items():
    if isinstance(dtype, str):
      if dtype == name:
        return d
    else:
      try:
        if jnp.dtype(dtype) == jnp.dtype(d):
          return d
      except TypeError:
        break
  raise ConfigError(f'dtype={dtype!r} is not supported; valid: {", ".join(DTYPES)}')


class Stem(nn.Module):
  """The layers before the first stage.

  imagenet: 7x7/2 conv (pad 3), norm, act, 3x3/2 max-pool (pad 1, -inf).
  deep: 3x3/2, 3x3, 3x3 convs (width/2, width/2, width) with norm+act after
    each (ResNet-C, He et al. 2019), then the same max-pool.
  cifar: 3x3 conv, norm, act (pre-activation: the conv alone, the first block
    normalises).
  With pool='conv' (imagenet, deep) a 3x3/2 conv + norm + act replaces the
  max-pool (ResNet-RS; timm's replace_stem_pool).

  Attributes:
    kind: 'imagenet', 'deep' or 'cifar'.
    features: output channels.
    conv, norm, act: layer constructors.
    preact: pre-activation network.
    pool: 'max' or 'conv' (imagenet and deep stems).
  """
  kind: str
  features: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  preact: bool = False
  pool: str = 'max'

  @nn.compact
  def __call__(self, x, *, tap: bool = False):
    """The stem's output; with `tap`, (the activation before the pool, output).

    The tap is the stem's feature map (features.py): the CIFAR stem has no
    pool, so there it is the output itself.
    """
    if self.kind == 'cifar':
      x = self.conv(self.features, (3, 3), padding=blocks.pad(3), name='conv1')(x)
      if not self.preact:
        x = self.act(self.norm(name='norm1')(x))
      return (x, x) if tap else x
    if self.kind == 'imagenet':
      x = self.conv(self.features, (7, 7), strides=(2, 2), padding=blocks.pad(7),
                    name='conv1')(x)
      x = self.act(self.norm(name='norm1')(x))
    elif self.kind == 'deep':
      half = self.features // 2
      for i, (width, stride) in enumerate(
          [(half, 2), (half, 1), (self.features, 1)], start=1):
        x = self.conv(width, (3, 3), strides=(stride, stride), padding=blocks.pad(3),
                      name=f'conv{i}')(x)
        x = self.act(self.norm(name=f'norm{i}')(x))
    else:
      raise ValueError(f'unknown stem {self.kind!r}')
    before_pool = x
    if self.pool == 'conv':
      x = self.conv(self.features, (3, 3), strides=(2, 2), padding=blocks.pad(3),
                    name='pool_conv')(x)
      x = self.act(self.norm(name='pool_norm')(x))
    else:
      # nn.max_pool pads with -inf, like torch.nn.MaxPool2d(3, 2, padding=1).
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=blocks.pad(3))
    return (before_pool, x) if tap else x


class Stage(nn.Module):
  """`num_blocks` blocks; the first one carries the stage's stride.

  Attributes:
    block: block constructor with everything but `strides` fixed.
    num_blocks: blocks in the stage.
    strides: stride of the first block.
    drop_path: stochastic-depth constructor taking `rate` (blocks.DropPath),
      given to the blocks whose rate is above 0; None: no stochastic depth.
    drop_path_rates: each block's rate (ResNetSpec.drop_path_rates).
  """
  block: ModuleDef
  num_blocks: int
  strides: int = 1
  drop_path: ModuleDef | None = None
  drop_path_rates: tuple[float, ...] = ()

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_blocks):
      extra = {}
      if self.drop_path is not None and self.drop_path_rates[i] > 0:
        extra['drop_path'] = functools.partial(self.drop_path, rate=self.drop_path_rates[i])
      x = self.block(strides=self.strides if i == 0 else 1, name=f'block{i + 1}',
                     **extra)(x)
    return x


class Head(nn.Module):
  """(Pre-activation: final norm + act,) global average pool, (dropout,) Dense -> logits.

  Attributes:
    num_classes: outputs of the classifier.
    norm, act: layer constructors (used for pre-activation networks).
    preact: apply the final norm + act (v2 blocks end with a conv).
    dtype: compute dtype of the classifier.
    dropout: dropout constructor (nn.Dropout-like) on the pooled features, or
      None.
  """
  num_classes: int
  norm: ModuleDef
  act: Callable = nn.relu
  preact: bool = False
  dtype: Any = jnp.float32
  dropout: ModuleDef | None = None

  @nn.compact
  def __call__(self, x, *, outputs: tuple[str, ...] | None = None):
    """Logits; with `outputs` (among 'pooled', 'logits'), a dict of those.

    'pooled' is what the classifier reads; without 'logits' the classifier is
    not called (a backbone has no classifier parameters).
    """
    if self.preact:
      x = self.act(self.norm(name='norm')(x))
    x = jnp.mean(x, axis=(1, 2))  # jnp.mean accumulates bf16/f16 in float32.
    if self.dropout is not None:
      x = self.dropout(name='dropout')(x)
    if outputs is not None and 'logits' not in outputs:
      return {'pooled': x} if 'pooled' in outputs else {}
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                      name='fc')(x)
    if outputs is None:
      return logits
    return {'pooled': x, 'logits': logits} if 'pooled' in outputs else {'logits': logits}


class ResNet(nn.Module):
  """A ResNet described by a ResNetSpec.

  Attributes:
    spec: the resolved architecture (registry.resolve_spec).
    num_classes: classifier outputs.
    dtype: compute dtype (params are always float32).
    axis_name: mesh axis over which BatchNorm averages batch statistics inside
      the train step (parallel.BATCH_AXIS); None outside a mapped step.
    cpu_fast_paths: on the CPU backend, use the formulations of
      `fast_paths` (same values, faster under XLA:CPU); ignored elsewhere.
  """
  spec: ResNetSpec
  num_classes: int
  dtype: Any = jnp.float32
  axis_name: str | None = None
  cpu_fast_paths: bool = True

  def layers(self, train: bool) -> tuple[ModuleDef, ModuleDef]:
    """The conv and norm constructors shared by all parts."""
    spec = self.spec
    conv = functools.partial(
        nn.Conv, use_bias=spec.norm == 'none', dtype=self.dtype,
        param_dtype=jnp.float32, kernel_init=CONV_INIT)
    if spec.norm == 'batch':
      norm = functools.partial(
          nn.BatchNorm, use_running_average=not train, momentum=spec.bn_momentum,
          epsilon=BN_EPSILON, axis_name=self.axis_name, dtype=self.dtype,
          param_dtype=jnp.float32)
    elif spec.norm == 'group':
      norm = functools.partial(nn.GroupNorm, num_groups=spec.num_groups,
                               epsilon=BN_EPSILON, dtype=self.dtype,
                               param_dtype=jnp.float32)
    else:
      norm = blocks.Identity
    return conv, norm

  def parts(self, train: bool, *, detached: bool = False) -> list[tuple[str, nn.Module]]:
    """The network's parts in order: ('stem', ...), ('stage1', ...), ('head', ...).

    Args:
      train: BatchNorm mode (batch statistics vs running averages); stochastic
        depth and dropout act only in training.
      detached: build standalone modules (no parent) that can be `apply`d on
        their own with `variables[...][name]`, e.g. to measure one stage.
        Inside this module's own __call__ they are children (detached=False).
    """
    spec = self.spec
    conv, norm = self.layers(train)
    act = fast_paths.relu if fast_paths.enabled(self.cpu_fast_paths) else nn.relu
    kw = {'parent': None} if detached else {}
    common = dict(conv=conv, norm=norm, act=act, preact=spec.preact)
    out = [('stem', Stem(spec.stem, spec.stem_width, **common, pool=spec.stem_pool,
                         name='stem', **kw))]
    if spec.block == 'basic':
      block_cls = blocks.BasicBlock
    else:
      block_cls = functools.partial(blocks.BottleneckBlock, groups=spec.groups,
                                    stride_on=spec.bottleneck_stride)
    if spec.se_ratio:
      block_cls = functools.partial(
          block_cls, se=functools.partial(blocks.SqueezeExcite, spec.se_ratio, conv, act))
    stochastic = {}
    if spec.drop_path_rate:
      stochastic['drop_path'] = functools.partial(blocks.DropPath, deterministic=not train)
    rates = spec.drop_path_rates()
    for i, (size, planes) in enumerate(zip(spec.stage_sizes, spec.stage_widths)):
      extra = {'inner_features': spec.inner_width(planes)} if spec.block == 'bottleneck' else {}
      block = functools.partial(
          block_cls, planes, **common, shortcut=spec.shortcut,
          zero_init_residual=spec.zero_init_residual, **extra)
      name = f'stage{i + 1}'
      if stochastic:
        stochastic['drop_path_rates'] = rates[i]
      out.append((name, Stage(block, size, strides=1 if i == 0 else 2, **stochastic,
                              name=name, **kw)))
    dropout = None
    if spec.dropout_rate:
      dropout = functools.partial(nn.Dropout, spec.dropout_rate, deterministic=not train)
    out.append(('head', Head(self.num_classes, norm, act, spec.preact, self.dtype,
                             dropout=dropout, name='head', **kw)))
    return out

  @nn.compact
  def __call__(self, x, *, train: bool, features: bool | str | Sequence[str] | None = None):
    """Logits [N, num_classes] (compute dtype) for NHWC images x, or features.

    With drop_path_rate or dropout_rate above 0, `train=True` needs a
    'dropout' rng: `apply(..., rngs={'dropout': key})`.

    Args:
      x: images [N, H, W, C].
      train: BatchNorm mode, stochastic depth and dropout.
      features: None (default): the logits. Otherwise the intermediate outputs
        to return as {name: array}, in network order: True (every feature
        map: 'stem', 'stage1', ...), or names among those and 'pooled',
        'logits' (features.py). Only the layers up to the last one named run;
        the head only for 'pooled' or 'logits'.
    """
    x = jnp.asarray(x, self.dtype)
    if features is None:
      for _, part in self.parts(train):
        x = part(x)
      return x
    wanted = features_lib.select(self.spec, features)
    head = tuple(n for n in wanted if n in features_lib.HEAD_OUTPUTS)
    last = 'head' if head else wanted[-1]
    out = {}
    for name, part in self.parts(train):
      if name == 'stem':
        out[name], x = part(x, tap=True)
      elif name == 'head':
        out.update(part(x, outputs=head))
      else:
        x = out[name] = part(x)
      if name == last:
        break
    return {n: out[n] for n in wanted}


def create_model(model_config: Any, *, num_classes: int, dtype: Any = jnp.float32,
                 axis_name: str | None = None, cpu_fast_paths: bool = True) -> ResNet:
  """Builds the ResNet that a `model` config section describes.

  Args:
    model_config: `config.model` (ConfigDict) or a mapping with its keys;
      missing keys take the base defaults (registry.MODEL_DEFAULTS).
    num_classes: classifier outputs.
    dtype: compute dtype, 'float32'/'bfloat16'/'float16' or the jnp dtype;
      params stay float32.
    axis_name: mesh axis name for cross-device BatchNorm (None outside a
      mapped step).
    cpu_fast_paths: on the CPU backend, XLA:CPU-friendly formulations of the
      same layers (`config.cpu_fast_paths`; see models/fast_paths.py).

  Returns:
    An unbound ResNet; call `model.apply(variables, x, train=...)`, with
    `mutable=['batch_stats']` when training with BatchNorm.

  Raises:
    ConfigError: invalid config values or combinations, num_classes or dtype.
  """
  spec = model_config if isinstance(model_config, ResNetSpec) else resolve_spec(
      model_config)
  if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or (
      num_classes < 1):
    raise ConfigError(f'num_classes={num_classes!r} must be a positive integer')
  return ResNet(spec=spec, num_classes=int(num_classes), dtype=canonical_dtype(dtype),
                axis_name=axis_name, cpu_fast_paths=bool(cpu_fast_paths))
