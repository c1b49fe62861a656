"""Intermediate features of a ResNet: what can be taken out, and where it is.

    from resnet_jax import models
    info = models.feature_info(spec)      # stem, stage1..stageN: channels, reduction
    maps = model.apply(variables, images, train=False, features=True)
    maps['stage4']                        # [N, H/32, W/32, 2048] for a ResNet-50
    out = model.apply(variables, images, train=False,
                      features=('stage3', 'stage4', 'pooled', 'logits'))

The taps, in network order (`feature_names(spec)` plus `HEAD_OUTPUTS`):

- 'stem': the stem's activation before its downsampling pool (the max-pool,
  or the conv of stem_pool='conv'): reduction 2 for the imagenet and deep
  stems, as timm's `act1`; the CIFAR stem does not downsample, so its output
  (reduction 1). Pre-activation CIFAR stems end with the conv alone.
- 'stage1' ... 'stageN': each stage's output. For pre-activation networks this
  is the residual stream itself, not normalised (the final norm + act belong
  to the head), as timm's ResNetV2 features.
- 'pooled': what the classifier reads, [N, C]: (pre-activation: final norm +
  act,) global average pool (and dropout in training); timm's
  `forward_head(pre_logits=True)`. Needs no classifier weights.
- 'logits': the classifier's output, [N, num_classes].

Selecting only early taps runs only the layers they need, and a model
initialised with `features=...` that names no head output has no classifier
parameters: a backbone. The default call (`features=None`) is untouched: same
parameters, same program, same logits.
"""

import dataclasses
from typing import Any, Iterable

from resnet_jax.errors import ConfigError
from resnet_jax.models.registry import ResNetSpec

# The head's outputs a `features=` selection may name besides the feature maps.
HEAD_OUTPUTS = ('pooled', 'logits')


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
  """One feature map of the network.

  Attributes:
    name: 'stem', 'stage1', ...: the key in the `features=` output, and the
      part of the parameter tree that computes it.
    index: its position (0 = stem), as timm's `index`.
    channels: channels of the map (timm's `num_chs`).
    reduction: input side / map side, for input sides that are multiples of
      the network's total reduction (timm's `reduction`); other sides round up
      at each stride-2 layer.
    timm_module: the name of the same tap in timm's ResNet (`act1`, `layer1`,
      ...): what `feature_info` of timm's `features_only` model says.
  """
  name: str
  index: int
  channels: int
  reduction: int
  timm_module: str

  def as_timm(self) -> dict[str, Any]:
    """This entry as timm's `model.feature_info.get_dicts()` writes it."""
    return {'num_chs': self.channels, 'reduction': self.reduction,
            'module': self.timm_module, 'index': self.index}


def feature_info(spec: ResNetSpec) -> tuple[FeatureInfo, ...]:
  """The stem's and every stage's feature map: name, channels, reduction.

  Args:
    spec: a resolved architecture (`models.resolve_spec(config.model)`, or
      `model.spec`).

  Returns:
    One FeatureInfo per tap, in network order: 'stem', 'stage1', ...
  """
  downsamples = spec.stem in ('imagenet', 'deep')
  out = [FeatureInfo('stem', 0, spec.stem_width, 2 if downsamples else 1, 'act1')]
  reduction = 4 if downsamples else 1
  for i, channels in enumerate(spec.stage_out_widths):
    if i:
      reduction *= 2
    out.append(FeatureInfo(f'stage{i + 1}', i + 1, channels, reduction, f'layer{i + 1}'))
  return tuple(out)


def feature_names(spec: ResNetSpec) -> tuple[str, ...]:
  """('stem', 'stage1', ..., 'stageN'): the feature maps `features=True` returns."""
  return tuple(f.name for f in feature_info(spec))


def select(spec: ResNetSpec, features: bool | str | Iterable[str]) -> tuple[str, ...]:
  """The outputs a `features=` argument asks for, checked, in network order.

  Args:
    spec: the network's architecture.
    features: True (every feature map, no head), one name, or names among
      `feature_names(spec)` and HEAD_OUTPUTS.

  Raises:
    ConfigError: an unknown name, or an empty selection (names the valid ones).
  """
  valid = feature_names(spec) + HEAD_OUTPUTS
  if features is True:
    return feature_names(spec)
  if isinstance(features, str):
    features = (features,)
  try:
    wanted = set(features)
    problem = ''
  except TypeError:
    wanted, problem = set(), f'{features!r} is not a name or a list of names'
  unknown = sorted(str(n) for n in wanted - set(valid))
  if unknown:
    problem = f'unknown output(s) {", ".join(unknown)}'
  elif not wanted and not problem:
    problem = 'nothing selected'
  if problem:
    raise ConfigError(f'features: {problem}; valid for {spec.label}: {", ".join(valid)} '
                      '(or True: every feature map)')
  return tuple(n for n in valid if n in wanted)
