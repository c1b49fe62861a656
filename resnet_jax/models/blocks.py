"""Residual blocks and shortcuts, generic over conv, norm and activation.

Blocks receive their layers as constructors (usually `functools.partial`s that
fix dtype, initialisers, BatchNorm's train mode...), so one block class serves
every ResNet variant:

  conv(features, kernel_size, strides=..., padding=..., name=...) -> nn.Conv-like
  norm(name=..., [scale_init=...]) -> nn.BatchNorm/GroupNorm-like
  act(x) -> x

and, optionally, what acts on the residual branch before the addition:

  se(name=...) -> SqueezeExcite-like (channel gate on the branch)
  drop_path(name=...) -> DropPath-like (stochastic depth)

None (the default) leaves the branch as it is: no module, no parameter.

Padding is always explicit and symmetric, as torchvision pads (k // 2 each
side): XLA's 'SAME' pads a stride-2 3x3 conv by (0, 1), which would compute
something else from the same weights.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any


def pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """torchvision's symmetric padding for a square `kernel` (k // 2 each side)."""
  p = kernel // 2
  return ((p, p), (p, p))


class Identity(nn.Module):
  """The `norm='none'` layer: passes its input through."""

  @nn.compact
  def __call__(self, x):
    return x


def make_divisible(value: float, divisor: int = 8) -> int:
  """timm's make_divisible(value, divisor, round_limit=0.): `value` rounded half
  up to a multiple of `divisor`, at least `divisor` (SEModule's reduced width)."""
  return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018), as timm's SEModule.

  x * sigmoid(fc2(act(fc1(mean_hw(x))))): fc1 and fc2 are 1x1 convs with bias,
  C -> make_divisible(C * ratio, divisor) -> C channels.

  Attributes:
    ratio: reduction ratio (timm's rd_ratio: 1/16 SE-ResNets, 0.25 ResNet-RS).
    conv: conv constructor (called with use_bias=True).
    act: activation between the two convs.
    divisor: the reduced width is a multiple of this (timm's rd_divisor).
  """
  ratio: float
  conv: ModuleDef
  act: Callable = nn.relu
  divisor: int = 8

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = self.conv(make_divisible(channels * self.ratio, self.divisor), (1, 1),
                  padding=pad(1), use_bias=True, name='fc1')(s)
    s = self.conv(channels, (1, 1), padding=pad(1), use_bias=True, name='fc2')(self.act(s))
    return x * nn.sigmoid(s)


class DropPath(nn.Module):
  """Stochastic depth on a residual branch (Huang et al. 2016), as timm's DropPath.

  In training each example's branch is kept with probability 1 - rate and
  then scaled by 1 / (1 - rate), so its expected value is unchanged, or else
  zeroed; the per-example mask comes from the `rng_collection` rng. With
  `deterministic` (evaluation) or rate 0 it is the identity.

  Attributes:
    rate: probability of dropping an example's branch, in [0, 1).
    deterministic: evaluation mode.
    rng_collection: the rng stream the masks come from.
  """
  rate: float
  deterministic: bool = True
  rng_collection: str = 'dropout'

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng(self.rng_collection), keep, shape)
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


def projects(kind: str, in_features: int, out_features: int, strides: int) -> bool:
  """Whether shortcut option `kind` uses a 1x1 conv + norm for this block."""
  if kind == 'C':
    return True
  if kind in ('B', 'D'):
    return strides != 1 or in_features != out_features
  return False  # 'A' is parameter-free; 'none' has no shortcut at all.


class Shortcut(nn.Module):
  """The shortcut path of a residual block (options A, B, C, D).

  A: identity; subsamples x[:, ::s, ::s] and zero-pads the extra channels.
  B: 1x1 conv (stride s) + norm where the shape changes, else identity.
  C: 1x1 conv (stride s) + norm on every block.
  D: where downsampling, 2x2 average pool (stride 2) then 1x1 conv + norm
     (ResNet-D, He et al. 2019); where only channels change, 1x1 conv + norm.

  Attributes:
    features: output channels.
    strides: spatial stride of the block.
    kind: 'A', 'B', 'C' or 'D'.
    conv: conv constructor.
    norm: norm constructor.
  """
  features: int
  strides: int
  kind: str
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    in_features = x.shape[-1]
    s = self.strides
    if not projects(self.kind, in_features, self.features, s):
      if s != 1:
        x = x[:, ::s, ::s, :]
      extra = self.features - in_features
      if extra < 0:
        raise ValueError(f'option A cannot shrink {in_features} to {self.features} channels')
      if extra:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
      return x
    if self.kind == 'D' and s != 1:
      # ceil_mode with count_include_pad=False (as timm): odd sizes still give
      # ceil(size / 2), the same size as the stride-2 branch.
      h, w = x.shape[1:3]
      x = nn.avg_pool(x, (s, s), strides=(s, s),
                      padding=((0, (-h) % s), (0, (-w) % s)), count_include_pad=False)
      s = 1
    x = self.conv(self.features, (1, 1), strides=(s, s), padding=pad(1), name='conv')(x)
    return self.norm(name='norm')(x)


class _Block(nn.Module):
  """Fields shared by both block kinds.

  Attributes:
    features: the block's planes (basic: output width; bottleneck: output
      width / 4).
    conv, norm, act: layer constructors (see the module docstring).
    strides: spatial stride (1 or 2) of this block.
    shortcut: 'A', 'B', 'C', 'D', or 'none' for a plain (non-residual) block.
    preact: pre-activation (v2): norm -> act -> conv, identity path untouched.
    zero_init_residual: the last norm of the residual branch starts with scale
      0, so the block starts as its shortcut.
    se: squeeze-and-excitation constructor applied to the branch's output, or
      None.
    drop_path: stochastic-depth constructor applied to the branch's output
      (after `se`), or None.
  """
  features: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  strides: int = 1
  shortcut: str = 'B'
  preact: bool = False
  zero_init_residual: bool = False
  se: ModuleDef | None = None
  drop_path: ModuleDef | None = None

  def _last_norm(self, name: str):
    if self.zero_init_residual:
      return self.norm(name=name, scale_init=nn.initializers.zeros)
    return self.norm(name=name)

  def _shortcut_input(self, x, pre, out_features):
    """What the shortcut sees: v2 projections take the pre-activated input
    (He et al. 2016, appendix), identities take x itself (a clean path)."""
    if self.preact and projects(self.shortcut, x.shape[-1], out_features, self.strides):
      return pre
    return x

  def _merge(self, x, pre, y, out_features):
    """Ends the branch (SE, drop path: timm's order), adds the shortcut and
    applies the post-activation (v1 only)."""
    if self.se is not None:
      y = self.se(name='se')(y)
    if self.drop_path is not None:
      y = self.drop_path(name='drop_path')(y)
    if self.shortcut != 'none':
      s = Shortcut(out_features, self.strides, self.shortcut, self.conv, self.norm,
                   name='shortcut')(self._shortcut_input(x, pre, out_features))
      y = y + s
    return y if self.preact else self.act(y)


class BasicBlock(_Block):
  """Two 3x3 convs: relu(norm(conv(relu(norm(conv(x))))) + shortcut(x)).

  Pre-activation: conv(act(norm(conv(act(norm(x)))))) + shortcut(x).
  """

  @nn.compact
  def __call__(self, x):
    s = (self.strides, self.strides)
    if self.preact:
      pre = self.act(self.norm(name='norm1')(x))
      y = self.conv(self.features, (3, 3), strides=s, padding=pad(3), name='conv1')(pre)
      y = self.act(self._last_norm('norm2')(y))
      y = self.conv(self.features, (3, 3), padding=pad(3), name='conv2')(y)
    else:
      pre = x
      y = self.conv(self.features, (3, 3), strides=s, padding=pad(3), name='conv1')(x)
      y = self.act(self.norm(name='norm1')(y))
      y = self.conv(self.features, (3, 3), padding=pad(3), name='conv2')(y)
      y = self._last_norm('norm2')(y)
    return self._merge(x, pre, y, self.features)


class BottleneckBlock(_Block):
  """1x1 (reduce), 3x3 (grouped), 1x1 (expand x4) convs plus shortcut.

  Attributes:
    inner_features: width of the 3x3 conv (None: `features`); ResNeXt and
      wide ResNets set it (see ResNetSpec.inner_width).
    groups: groups of the 3x3 conv.
    stride_on: 'v1.5' puts the stride on the 3x3 conv (torchvision), 'v1' on
      the first 1x1 (the original paper).
  """
  inner_features: int | None = None
  groups: int = 1
  stride_on: str = 'v1.5'
  expansion: int = 4

  @nn.compact
  def __call__(self, x):
    inner = self.inner_features or self.features
    out = self.features * self.expansion
    s = (self.strides, self.strides)
    s1, s3 = ((1, 1), s) if self.stride_on == 'v1.5' else (s, (1, 1))
    conv3x3 = lambda: self.conv(inner, (3, 3), strides=s3, padding=pad(3),
                                feature_group_count=self.groups, name='conv2')
    if self.preact:
      pre = self.act(self.norm(name='norm1')(x))
      y = self.conv(inner, (1, 1), strides=s1, padding=pad(1), name='conv1')(pre)
      y = conv3x3()(self.act(self.norm(name='norm2')(y)))
      y = self.act(self._last_norm('norm3')(y))
      y = self.conv(out, (1, 1), padding=pad(1), name='conv3')(y)
    else:
      pre = x
      y = self.conv(inner, (1, 1), strides=s1, padding=pad(1), name='conv1')(x)
      y = self.act(self.norm(name='norm1')(y))
      y = self.act(self.norm(name='norm2')(conv3x3()(y)))
      y = self.conv(out, (1, 1), padding=pad(1), name='conv3')(y)
      y = self._last_norm('norm3')(y)
    return self._merge(x, pre, y, out)
