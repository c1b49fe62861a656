"""Named ResNet variants, the `model` config schema, and resolving it into an architecture.

A variant is data, not a class: `VARIANTS['resnet50']` is a few shape fields
(family, depth, widths, groups...). `MODEL_FIELDS` is the one schema of the
`model` config section: every field, its default and what it means
(configs/base.py builds the section from it). `resolve_spec` merges the
config, the named variant and the defaults into one validated `ResNetSpec`
that the modules in `resnet.py` build from. Adding an architecture option is
one entry in MODEL_FIELDS, its check in `resolve_spec`, and its use in the
modules.

How `model.name` combines with the other fields: the shape fields (marked
"shape" below) are unset (None) unless a config or the command line sets them.
An unset shape field takes the named variant's value, else the family's
default. A set one wins, also over the variant: `name='resnet50'` with
`depth=101` is ResNet-101 (and no longer named resnet50), and
`name='cifar_resnet56'` with `depth=20` is ResNet-20: an explicit override,
never a silent one. Without a name, the fields alone describe the network.

The shortcut option, the bottleneck stride and the norm are never part of a
variant: they are ablation axes and always come from the config. torchvision's
`resnet50` is `name='resnet50', shortcut='B'` (as configs/imagenet_base.py sets);
timm's ResNet-RS-50 is `name='resnetrs50', shortcut='D'`. Nor are the training
regularisers (drop_path_rate, dropout_rate): they change no parameter.
"""

import dataclasses
import math
from typing import Any, Mapping

from resnet_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Field:
  """One field of the `model` config section.

  Attributes:
    default: its value when not set; None for a shape field (from the variant).
    type: its Python type (for a shape field, the type the command line parses).
    doc: what it means and its valid values.
  """
  default: Any
  type: type
  doc: str


MODEL_FIELDS: dict[str, Field] = {
    'name': Field('', str,
                  "Named variant ('resnet50', 'cifar_resnet56', 'wide_resnet50_2', ... "
                  "see VARIANTS): supplies the shape fields left unset; '' = build "
                  'from the fields.'),
    'family': Field(None, str,
                    "Shape. 'imagenet' (ResNet-18...200, 64-512 stage widths) or 'cifar' "
                    "(6n+2, 16/32/64). Unset: the variant's, else 'cifar'."),
    'depth': Field(None, int,
                   "Shape. 18/34/50/101/152/200 for 'imagenet', any 6n+2 (basic) or 9n+2 "
                   "(bottleneck) for 'cifar'. Unset: the variant's, else 20 (cifar) or 50 "
                   '(imagenet).'),
    'block': Field(None, str,
                   "Shape. 'auto' (ImageNet: basic below depth 50, bottleneck from 50; "
                   "CIFAR: basic), 'basic' or 'bottleneck'. Unset: 'auto'."),
    'preact': Field(None, bool,
                    'Shape. Pre-activation blocks (He et al. 2016, "Identity '
                    'Mappings"). Unset: false.'),
    'stem': Field(None, str,
                  "Shape. 'imagenet' (7x7/2 conv + 3x3/2 max-pool), 'deep' (three 3x3 "
                  "convs, ResNet-C), 'cifar' (one 3x3 conv, no pool), or 'auto' (from "
                  "the family). Unset: 'auto'."),
    'base_width': Field(None, int,
                        "Shape. Width of the first stage; later stages double it. 0 or "
                        'unset: the family\'s (64 imagenet, 16 cifar).'),
    'width_multiplier': Field(None, int,
                              'Shape. Wide-ResNet factor on the bottleneck\'s inner width '
                              '(2 for wide_resnet50_2) or a basic block\'s width. Unset: 1.'),
    'se_ratio': Field(None, float,
                      'Shape. Squeeze-and-excitation on every residual branch, before '
                      "the addition (Hu et al. 2018, as timm's SEModule): global "
                      'average, 1x1 conv to C * se_ratio channels (rounded to a multiple '
                      'of 8, at least 8), ReLU, 1x1 conv back to C, sigmoid gate; C is '
                      "the block's output width. 0 = off; 1/16 for seresnet*, 0.25 for "
                      "ResNet-RS. Unset: the variant's, else 0."),
    'stem_pool': Field(None, str,
                       "Shape. The stem's last downsampling (imagenet and deep stems): "
                       "'max' (3x3/2 max-pool) or 'conv' (3x3/2 conv + norm + act; "
                       "ResNet-RS, timm's replace_stem_pool). Unset: the variant's, else "
                       "'max'."),
    'groups': Field(None, int,
                    'Shape. Groups of the bottleneck\'s 3x3 conv (ResNeXt cardinality). '
                    'Unset: 1.'),
    'width_per_group': Field(None, int,
                             'Shape. ResNeXt bottleneck width per group (4 for '
                             'resnext50_32x4d). Unset: 64 (a plain ResNet).'),
    'shortcut': Field('A', str,
                      "'A' (parameter-free zero-pad), 'B' (projection where the shape "
                      "changes), 'C' (projection everywhere), 'D' (avg-pool + 1x1 "
                      "projection when downsampling), 'none' (plain network)."),
    'bottleneck_stride': Field('v1.5', str,
                               "Bottleneck stride on the 3x3 conv ('v1.5', torchvision) "
                               "or on the first 1x1 ('v1', the paper)."),
    'norm': Field('batch', str, "'batch' (BatchNorm), 'group' (GroupNorm) or 'none'."),
    'num_groups': Field(32, int, "GroupNorm groups (norm='group' only)."),
    'bn_momentum': Field(0.9, float,
                         "BatchNorm running-average momentum (torchvision's 0.1 is 0.9 "
                         'here).'),
    'zero_init_residual': Field(False, bool,
                                'Zero-init the last norm scale in each residual branch '
                                '(Goyal et al. 2017).'),
    'drop_path_rate': Field(0.0, float,
                            'Stochastic depth (Huang et al. 2016) in training: each '
                            "example's residual branch is dropped with a probability "
                            'rising linearly over the blocks, block i of N: '
                            'drop_path_rate * i / (N - 1) (timm; the first block never), '
                            'and a kept branch is scaled by 1 / (1 - p). Draws from the '
                            "'dropout' rng. 0 = off."),
    'dropout_rate': Field(0.0, float,
                          "Dropout on the pooled features before the classifier in "
                          "training (timm's drop_rate). Draws from the 'dropout' rng. "
                          '0 = off.'),
    'bn_group_size': Field(0, int,
                           'BatchNorm statistics in training over groups of this many '
                           'devices ("ghost" / per-GPU BatchNorm, Goyal et al. 2017: 32 '
                           'images per group); 0 = over all devices (the whole global '
                           'batch). Running averages are then averaged over the groups, '
                           'so every device keeps the same state. Not part of the '
                           'architecture: the same weights either way.'),
}
# The section as plain values (None = unset shape field): what a missing key means.
MODEL_DEFAULTS: dict[str, Any] = {k: f.default for k, f in MODEL_FIELDS.items()}
# The fields a named variant may set (the architecture's shape), and their
# values when neither the config nor a variant sets them ('depth' depends on
# the family: _DEFAULT_DEPTH).
SHAPE_DEFAULTS: dict[str, Any] = {
    'family': 'cifar', 'block': 'auto', 'preact': False, 'stem': 'auto', 'base_width': 0,
    'width_multiplier': 1, 'se_ratio': 0.0, 'stem_pool': 'max', 'groups': 1,
    'width_per_group': 64,
}
VARIANT_FIELDS = ('family', 'depth', *[k for k in SHAPE_DEFAULTS if k != 'family'])
_DEFAULT_DEPTH = {'cifar': 20, 'imagenet': 50}

FAMILIES = ('imagenet', 'cifar')
SHORTCUTS = ('A', 'B', 'C', 'D', 'none')
BLOCKS = ('auto', 'basic', 'bottleneck')
STEMS = ('auto', 'imagenet', 'deep', 'cifar')
NORMS = ('batch', 'group', 'none')
BOTTLENECK_STRIDES = ('v1.5', 'v1')
STEM_POOLS = ('max', 'conv')

# ImageNet depths: (block kind, blocks per stage), He et al. 2015 Table 1;
# 200 from He et al. 2016 ("Identity Mappings").
IMAGENET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
    200: ('bottleneck', (3, 24, 36, 3)),
    # Bello et al. 2021 (ResNet-RS), Table 7, as timm's resnetrs270/350/420.
    270: ('bottleneck', (4, 29, 53, 4)),
    350: ('bottleneck', (4, 36, 72, 4)),
    420: ('bottleneck', (4, 44, 87, 4)),
}
# The depths of He et al. (the torchvision family and its pre-activation twins).
HE_DEPTHS = (18, 34, 50, 101, 152, 200)
# ResNet-RS's published depths (Bello et al. 2021); 50-200 share He et al.'s stages.
RS_DEPTHS = (50, 101, 152, 200, 270, 350, 420)

# Layers per block: a CIFAR net is 3 stages of n blocks plus stem conv and head,
# so depth = 3 * n * LAYERS + 2 (6n+2 basic, 9n+2 bottleneck).
_LAYERS_PER_BLOCK = {'basic': 2, 'bottleneck': 3}
_DEFAULT_BASE_WIDTH = {'imagenet': 64, 'cifar': 16}
_EXPANSION = {'basic': 1, 'bottleneck': 4}


def _imagenet(depth: int, **fields) -> dict[str, Any]:
  return {'family': 'imagenet', 'depth': depth, **fields}


def _cifar(depth: int, **fields) -> dict[str, Any]:
  return {'family': 'cifar', 'depth': depth, **fields}


# Named variants: model.name -> shape fields (see the module docstring).
VARIANTS: dict[str, dict[str, Any]] = {
    # torchvision's ImageNet family (use shortcut='B' for its exact weights).
    **{f'resnet{d}': _imagenet(d) for d in HE_DEPTHS},
    'wide_resnet50_2': _imagenet(50, width_multiplier=2),
    'wide_resnet101_2': _imagenet(101, width_multiplier=2),
    'resnext50_32x4d': _imagenet(50, groups=32, width_per_group=4),
    'resnext101_32x8d': _imagenet(101, groups=32, width_per_group=8),
    'resnext101_64x4d': _imagenet(101, groups=64, width_per_group=4),
    # He et al. 2016 pre-activation ResNets on ImageNet.
    **{f'preact_resnet{d}': _imagenet(d, preact=True) for d in HE_DEPTHS},
    # SE-ResNets and SE-ResNeXts (Hu et al. 2018) as timm builds them: SE 1/16
    # on the torchvision layout (shortcut='B' for timm's weights).
    **{f'seresnet{d}': _imagenet(d, se_ratio=1 / 16) for d in (18, 34, 50, 101, 152)},
    'seresnext50_32x4d': _imagenet(50, groups=32, width_per_group=4, se_ratio=1 / 16),
    'seresnext101_32x4d': _imagenet(101, groups=32, width_per_group=4, se_ratio=1 / 16),
    'seresnext101_32x8d': _imagenet(101, groups=32, width_per_group=8, se_ratio=1 / 16),
    'seresnext101_64x4d': _imagenet(101, groups=64, width_per_group=4, se_ratio=1 / 16),
    # ResNet-RS (Bello et al. 2021) as timm's resnetrs*: the deep stem (32, 32,
    # 64 channels), a stride-2 conv in place of its max-pool, SE 0.25 (use
    # shortcut='D', timm's avg_down, for its weights).
    **{f'resnetrs{d}': _imagenet(d, stem='deep', stem_pool='conv', se_ratio=0.25)
       for d in RS_DEPTHS},
    # He et al. 2015 section 4.2: CIFAR ResNet-(6n+2).
    **{f'cifar_resnet{d}': _cifar(d) for d in (20, 32, 44, 56, 110, 1202)},
    # He et al. 2016: pre-activation CIFAR nets (164 and 1001 use bottlenecks).
    'cifar_preact_resnet110': _cifar(110, preact=True),
    'cifar_preact_resnet164': _cifar(164, preact=True, block='bottleneck'),
    'cifar_preact_resnet1001': _cifar(1001, preact=True, block='bottleneck'),
}


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
  """A fully resolved, validated ResNet architecture.

  Attributes:
    name: the variant name it came from ('' if built from fields).
    family: 'imagenet' or 'cifar'.
    depth: the nominal depth (weighted layers).
    block: 'basic' or 'bottleneck'.
    stage_sizes: blocks per stage.
    stage_widths: per stage, the block's base width ("planes"): a basic
      block's output width; a bottleneck outputs `4 * planes`.
    stem: 'imagenet', 'deep' or 'cifar'.
    stem_width: channels the stem outputs.
    shortcut: 'A', 'B', 'C', 'D' or 'none'.
    preact: pre-activation (v2) blocks.
    bottleneck_stride: 'v1.5' (stride on the 3x3) or 'v1' (on the first 1x1).
    groups: groups of the bottleneck's 3x3 conv (ResNeXt cardinality).
    width_per_group: ResNeXt width per group (64 for plain ResNets).
    width_multiplier: wide-ResNet factor (bottleneck inner width, or a basic
      block's width).
    norm: 'batch', 'group' or 'none'.
    num_groups: GroupNorm groups.
    bn_momentum: BatchNorm running-average momentum.
    zero_init_residual: zero-init the last norm scale of each residual branch.
    se_ratio: squeeze-and-excitation reduction ratio (0: no SE).
    stem_pool: 'max' or 'conv' (imagenet and deep stems).
    drop_path_rate: stochastic depth rate of the last block (training only).
    dropout_rate: dropout before the classifier (training only).
  """
  name: str
  family: str
  depth: int
  block: str
  stage_sizes: tuple[int, ...]
  stage_widths: tuple[int, ...]
  stem: str
  stem_width: int
  shortcut: str
  preact: bool
  bottleneck_stride: str
  groups: int
  width_per_group: int
  width_multiplier: int
  norm: str
  num_groups: int
  bn_momentum: float
  zero_init_residual: bool
  se_ratio: float = 0.0
  stem_pool: str = 'max'
  drop_path_rate: float = 0.0
  dropout_rate: float = 0.0

  @property
  def label(self) -> str:
    """The variant's name, or 'cifar-resnet56' for one built from fields."""
    return self.name or f'{self.family}-resnet{self.depth}'

  @property
  def expansion(self) -> int:
    """Output width / planes of a block (1 basic, 4 bottleneck)."""
    return _EXPANSION[self.block]

  @property
  def stage_out_widths(self) -> tuple[int, ...]:
    """Channels each stage outputs."""
    return tuple(w * self.expansion for w in self.stage_widths)

  def inner_width(self, planes: int) -> int:
    """Width of a bottleneck's 3x3 conv, as torchvision computes it."""
    return int(planes * self.width_per_group * self.width_multiplier / 64) * self.groups

  def drop_path_rates(self) -> tuple[tuple[float, ...], ...]:
    """Per stage, each block's drop-path probability: timm's linear rule,
    drop_path_rate * i / (N - 1) for block i of N over the whole network."""
    total = sum(self.stage_sizes)
    out, i = [], 0
    for size in self.stage_sizes:
      out.append(tuple(self.drop_path_rate * (i + j) / (total - 1) if total > 1 else 0.0
                       for j in range(size)))
      i += size
    return tuple(out)

  def describe(self) -> str:
    """One line naming the architecture, e.g. for logs and the summary."""
    stages = ','.join(map(str, self.stage_sizes))
    kind = 'plain' if self.shortcut == 'none' else f'shortcut {self.shortcut}'
    extra = []
    if self.preact:
      extra.append('pre-activation')
    if self.block == 'bottleneck':
      extra.append(f'stride {self.bottleneck_stride}')
    if self.groups > 1:
      extra.append(f'{self.groups}x{self.width_per_group}d groups')
    if self.width_multiplier != 1:
      extra.append(f'width x{self.width_multiplier}')
    if self.se_ratio:
      extra.append(f'SE {self.se_ratio:g}')
    if self.stem_pool != 'max':
      extra.append(f'{self.stem_pool} stem pool')
    if self.drop_path_rate:
      extra.append(f'drop path {self.drop_path_rate:g}')
    if self.dropout_rate:
      extra.append(f'dropout {self.dropout_rate:g}')
    return (f'{self.label}: {self.block} [{stages}], widths {list(self.stage_out_widths)}, '
            f'{kind}, {self.stem} stem, {self.norm} norm'
            + ''.join(f', {e}' for e in extra))


def _choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
  """Returns the valid spelling of `value` among `choices` (case-insensitive)."""
  if isinstance(value, str):
    for c in choices:
      if value.lower() == c.lower():
        return c
  valid = ', '.join(repr(c) for c in choices)
  raise ConfigError(f'model.{field}={value!r} is not supported; valid choices: {valid}')


def _int(field: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f'model.{field}={value!r} must be an integer >= {minimum}')
  return value


def _rate(field: str, value: Any, *, maximum: float, closed: bool) -> float:
  """A probability-like number in [0, maximum] (closed) or [0, maximum)."""
  inside = (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0.0 <= value
            and (value <= maximum if closed else value < maximum))
  if not inside:
    bound = f'[0, {maximum:g}]' if closed else f'[0, {maximum:g})'
    raise ConfigError(f'model.{field}={value!r} must be a number in {bound}')
  return float(value)


def _as_dict(model_config: Any) -> dict[str, Any]:
  """The config section as a plain dict, unknown keys rejected."""
  if model_config is None:
    return {}
  if hasattr(model_config, 'to_dict'):  # ml_collections.ConfigDict
    model_config = model_config.to_dict()
  if not isinstance(model_config, Mapping):
    raise ConfigError(
        f'model config must be a mapping or ConfigDict, not {type(model_config).__name__}')
  unknown = sorted(set(model_config) - set(MODEL_DEFAULTS))
  if unknown:
    raise ConfigError(f'unknown model config field(s) {unknown}; valid fields: '
                      f'{sorted(MODEL_DEFAULTS)}')
  return dict(model_config)


def merged_fields(model_config: Any) -> dict[str, Any]:
  """The config's fields, then the named variant's, then the defaults (module docstring)."""
  given = {k: v for k, v in _as_dict(model_config).items() if v is not None}
  name = given.get('name', '') or ''
  variant: dict[str, Any] = {}
  if name:
    if name not in VARIANTS:
      raise ConfigError(f'model.name={name!r} is not a known variant; valid names: '
                        f'{", ".join(sorted(VARIANTS))} (or empty to build from '
                        'family/depth)')
    variant = VARIANTS[name]
  values = {k: v for k, v in MODEL_DEFAULTS.items() if v is not None}
  values.update(SHAPE_DEFAULTS)
  values.update(variant)
  values.update(given)
  if 'depth' not in values:
    family = values['family']
    values['depth'] = _DEFAULT_DEPTH.get(family, _DEFAULT_DEPTH['cifar'])
  # A variant whose shape was overridden is not that variant any more.
  overridden = any(k in given and given[k] != v for k, v in variant.items())
  values['name'] = '' if overridden else name
  return values


def _stages(family: str, depth: int, block: str) -> tuple[str, tuple[int, ...]]:
  """Block kind and blocks per stage for a family and depth."""
  if family == 'imagenet':
    if depth not in IMAGENET_DEPTHS:
      raise ConfigError(
          f'model.depth={depth} is not an ImageNet ResNet depth; valid depths for '
          f"family 'imagenet': {', '.join(map(str, IMAGENET_DEPTHS))}")
    kind, sizes = IMAGENET_DEPTHS[depth]
    if block not in ('auto', kind):
      raise ConfigError(
          f"model.block={block!r} does not match ImageNet depth {depth}, which uses "
          f"{kind} blocks; valid choices: 'auto' or {kind!r}")
    return kind, sizes
  kind = 'basic' if block == 'auto' else block
  per_block = _LAYERS_PER_BLOCK[kind]
  n, rest = divmod(depth - 2, 3 * per_block)
  if rest or n < 1:
    rule = {'basic': '6n+2 (20, 32, 44, 56, 110, 1202, ...)',
            'bottleneck': '9n+2 (164, 1001, ...)'}[kind]
    raise ConfigError(
        f"model.depth={depth} is not a CIFAR ResNet depth with {kind} blocks; valid "
        f'depths: {rule} for n >= 1')
  return kind, (n, n, n)


def resolve_spec(model_config: Any) -> ResNetSpec:
  """Resolves and validates a `model` config section into a ResNetSpec.

  Args:
    model_config: the `config.model` ConfigDict, or any mapping with (some of)
      its keys; missing keys take the base defaults. `model.name` picks a named
      variant from VARIANTS (see the module docstring for how it combines).

  Returns:
    The resolved ResNetSpec.

  Raises:
    ConfigError: an unknown field, or a value or combination that is not
      supported; the message names the valid choices.
  """
  f = merged_fields(model_config)
  family = _choice('family', f['family'], FAMILIES)
  depth = _int('depth', f['depth'], 1)
  shortcut = _choice('shortcut', f['shortcut'], SHORTCUTS)
  block = _choice('block', f['block'], BLOCKS)
  stem = _choice('stem', f['stem'], STEMS)
  norm = _choice('norm', f['norm'], NORMS)
  bottleneck_stride = _choice('bottleneck_stride', f['bottleneck_stride'],
                              BOTTLENECK_STRIDES)
  stem_pool = _choice('stem_pool', f['stem_pool'], STEM_POOLS)
  # A ratio above 1 is almost surely the reduction factor (16) meant as 1/16.
  se_ratio = _rate('se_ratio', f['se_ratio'], maximum=1.0, closed=True)
  drop_path_rate = _rate('drop_path_rate', f['drop_path_rate'], maximum=1.0, closed=False)
  dropout_rate = _rate('dropout_rate', f['dropout_rate'], maximum=1.0, closed=False)
  base_width = _int('base_width', f['base_width'], 0)
  width_multiplier = _int('width_multiplier', f['width_multiplier'], 1)
  groups = _int('groups', f['groups'], 1)
  width_per_group = _int('width_per_group', f['width_per_group'], 1)
  num_groups = _int('num_groups', f['num_groups'], 1)
  if not isinstance(f['preact'], bool):
    raise ConfigError(f"model.preact={f['preact']!r} must be true or false")
  if not isinstance(f['zero_init_residual'], bool):
    raise ConfigError(
        f"model.zero_init_residual={f['zero_init_residual']!r} must be true or false")
  # Not part of the architecture (the same weights either way): which devices
  # share BatchNorm statistics in training; parallel.bn_group_size checks it
  # against the device count.
  _int('bn_group_size', f['bn_group_size'], 0)
  momentum = f['bn_momentum']
  if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
      0.0 <= momentum < 1.0):
    raise ConfigError(f'model.bn_momentum={momentum!r} must be a number in [0, 1)')

  block, stage_sizes = _stages(family, depth, block)
  if block == 'basic' and (groups != 1 or width_per_group != 64):
    raise ConfigError(
        f'model.groups={groups}/width_per_group={width_per_group}: grouped convs need '
        "bottleneck blocks; basic blocks support only groups=1, width_per_group=64")
  if f['zero_init_residual'] and norm == 'none':
    raise ConfigError("model.zero_init_residual needs a norm layer to zero; valid "
                      "norms with it: 'batch', 'group'")
  if drop_path_rate and shortcut == 'none':
    raise ConfigError(f'model.drop_path_rate={drop_path_rate:g} drops residual branches, '
                      "but shortcut='none' has no identity path to keep; valid "
                      "shortcuts with it: 'A', 'B', 'C', 'D'")

  base_width = base_width or _DEFAULT_BASE_WIDTH[family]
  if stem == 'auto':
    stem = 'imagenet' if family == 'imagenet' else 'cifar'
  if stem == 'cifar' and stem_pool != 'max':
    raise ConfigError(f"model.stem_pool={stem_pool!r}: the cifar stem does not "
                      "downsample; valid stems with it: 'imagenet', 'deep'")
  if stem == 'deep' and base_width < 2:
    raise ConfigError(f'model.base_width={base_width} is too narrow for the deep stem '
                      '(its first convs have base_width // 2 channels)')
  planes = tuple(base_width * 2**i for i in range(len(stage_sizes)))
  if block == 'basic':
    # Wide ResNets (Zagoruyko & Komodakis) widen the basic blocks, not the stem.
    planes = tuple(p * width_multiplier for p in planes)

  spec = ResNetSpec(
      name=f['name'], family=family, depth=depth, block=block,
      stage_sizes=stage_sizes, stage_widths=planes, stem=stem,
      stem_width=base_width, shortcut=shortcut, preact=f['preact'],
      bottleneck_stride=bottleneck_stride, groups=groups,
      width_per_group=width_per_group, width_multiplier=width_multiplier,
      norm=norm, num_groups=num_groups, bn_momentum=float(momentum),
      zero_init_residual=f['zero_init_residual'], se_ratio=se_ratio, stem_pool=stem_pool,
      drop_path_rate=drop_path_rate, dropout_rate=dropout_rate)
  if block == 'bottleneck':
    for p in planes:
      if spec.inner_width(p) < 1:
        raise ConfigError(f'model.width_per_group={width_per_group} makes the '
                          f'bottleneck of the {p}-plane stage empty; use a larger value')
  if norm == 'group':
    _check_group_norm(spec)
  return spec


def normalized_widths(spec: ResNetSpec) -> set[int]:
  """Channel counts of every norm layer in the network."""
  widths = {spec.stem_width}  # Also the stem's conv pool (stem_pool='conv').
  if spec.stem == 'deep':
    widths.add(spec.stem_width // 2)
  widths.update(spec.stage_out_widths)
  if spec.block == 'bottleneck':
    widths.update(spec.inner_width(p) for p in spec.stage_widths)
  return widths


def _check_group_norm(spec: ResNetSpec) -> None:
  bad = sorted(w for w in normalized_widths(spec) if w % spec.num_groups)
  if bad:
    widths = sorted(normalized_widths(spec))
    divisors = [g for g in range(1, min(widths) + 1) if all(w % g == 0 for w in widths)]
    raise ConfigError(
        f'model.num_groups={spec.num_groups} does not divide the channel counts {bad} '
        f'of this network; valid num_groups here: {divisors}')
