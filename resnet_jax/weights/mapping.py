"""PyTorch state dicts (torchvision, timm, CIFAR) <-> resnet_jax variables, exactly.

A PyTorch ResNet and ours hold the same tensors under other names and layouts.
The correspondence is computed, not listed: the model of an architecture is
traced with `jax.eval_shape` (no compute), and every leaf of its
variables is named in PyTorch's terms by the rules below. So the key table of
any architecture is the one our model actually has, and a name or shape that
PyTorch's model does not have is an error, never a silent skip.

Naming (torchvision and timm; `S`, `B` count from 1 here, PyTorch's index from 0):

    ours                                   PyTorch
    stem/conv1, stem/norm1                 conv1, bn1                (7x7 stem)
    stem/conv1..3, stem/norm1..3           conv1.0, conv1.1, conv1.3, conv1.4,
                                           conv1.6, bn1              (timm deep stem)
    stem/pool_conv, pool_norm              maxpool.0, maxpool.1      (timm
                                                                      replace_stem_pool)
    stageS/blockB/convK, normK             layerS.(B-1).convK, bnK
    stageS/blockB/se/fc1, fc2              layerS.(B-1).se.fc1, .fc2 (timm SEModule)
    stageS/blockB/shortcut/conv, norm      ...downsample.0, .1       (shortcut B)
                                           ...downsample.1, .2       (timm avg_down,
                                                                      shortcut D: .0 is
                                                                      the pool)
    head/fc                                fc

CIFAR ResNets ('torch_cifar') use the layout of the independent PyTorch
implementation in experiments/torch_parity.py: conv1, norm1 (stem),
blocks.stageS__blockB.{conv1, norm1, conv2, norm2, sc_conv, sc_norm}, fc.

Leaves: conv `kernel` (H, W, in, out) <-> `weight` (out, in, H, W); Dense
`kernel` (in, out) <-> `weight` (out, in); conv and norm `bias` <-> `bias`;
norm `scale` <-> `weight`; BatchNorm `batch_stats` `mean`/`var` <-> buffers `running_mean`/
`running_var`. Every value is copied bit for bit (transposes only).

`num_batches_tracked` (BatchNorm's update counter) is ignored on import: our
BatchNorm uses a fixed momentum and never reads it (PyTorch itself uses it
only with `momentum=None`). Export writes it as 0 so that the file has exactly
the keys of the PyTorch model's own `state_dict()`.
"""

import dataclasses
import functools
import re
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import models
from resnet_jax.errors import ConfigError

SOURCES = ('torchvision', 'timm', 'torch_cifar')
NUM_BATCHES_TRACKED = 'num_batches_tracked'
# At most this many keys are named per kind of mismatch in an error message.
MAX_LISTED = 12

_B = {'shortcut': 'B'}
_D = {'stem': 'deep', 'shortcut': 'D'}  # timm stem_type='deep', avg_down=True.
_C = {'stem': 'deep', 'shortcut': 'B'}  # timm stem_type='deep' (ResNet-C alone).
_SE = {'se_ratio': 1 / 16}  # timm attn_layer='se': SEModule's default rd_ratio.


def _imagenet(depth: int, **fields) -> dict[str, Any]:
  return {'family': 'imagenet', 'depth': depth, 'shortcut': 'B', **fields}


# torchvision.models: name -> our model config (torchvision's own constructors).
TORCHVISION: dict[str, dict[str, Any]] = {
    **{f'resnet{d}': {'name': f'resnet{d}', **_B} for d in (18, 34, 50, 101, 152)},
    'wide_resnet50_2': {'name': 'wide_resnet50_2', **_B},
    'wide_resnet101_2': {'name': 'wide_resnet101_2', **_B},
    'resnext50_32x4d': {'name': 'resnext50_32x4d', **_B},
    'resnext101_32x8d': {'name': 'resnext101_32x8d', **_B},
    'resnext101_64x4d': {'name': 'resnext101_64x4d', **_B},
}

# timm.models.resnet: every model of timm's ResNet class that our family
# expresses exactly (timm's registry arguments in the comments).
TIMM: dict[str, dict[str, Any]] = {
    # block, layers: as torchvision.
    **{f'resnet{d}': {'name': f'resnet{d}', **_B} for d in (18, 34, 50, 101, 152, 200)},
    # stem_width=32, stem_type='deep', avg_down=True (ResNet-D): 32-32-64 stem.
    **{f'resnet{d}d': {'name': f'resnet{d}', **_D} for d in (18, 34, 50, 101, 152, 200)},
    # stem_width=32, stem_type='deep' (ResNet-C): projection shortcuts.
    **{f'resnet{d}c': {'name': f'resnet{d}', **_C} for d in (50, 101, 152)},
    'wide_resnet50_2': {'name': 'wide_resnet50_2', **_B},
    'wide_resnet101_2': {'name': 'wide_resnet101_2', **_B},
    'resnext50_32x4d': {'name': 'resnext50_32x4d', **_B},
    'resnext50d_32x4d': {'name': 'resnext50_32x4d', **_D},
    'resnext101_32x4d': _imagenet(101, groups=32, width_per_group=4),
    'resnext101_32x8d': {'name': 'resnext101_32x8d', **_B},
    'resnext101_32x16d': _imagenet(101, groups=32, width_per_group=16),
    'resnext101_32x32d': _imagenet(101, groups=32, width_per_group=32),
    'resnext101_64x4d': {'name': 'resnext101_64x4d', **_B},
    # norm_layer='groupnorm': GroupNorm(32 groups, eps 1e-5) everywhere.
    'resnet50_gn': {'name': 'resnet50', **_B, 'norm': 'group', 'num_groups': 32},
    # block_args=dict(attn_layer='se'): SE (rd_ratio 1/16) in every block.
    **{f'seresnet{d}': {'name': f'seresnet{d}', **_B} for d in (18, 34, 50, 101, 152)},
    # ... with stem_width=32, stem_type='deep', avg_down=True.
    'seresnet152d': {'name': 'seresnet152', **_D},
    'seresnet200d': _imagenet(200, **_SE, **_D),
    'seresnext50_32x4d': {'name': 'seresnext50_32x4d', **_B},
    'seresnext101_32x4d': {'name': 'seresnext101_32x4d', **_B},
    'seresnext101_32x8d': {'name': 'seresnext101_32x8d', **_B},
    'seresnext101d_32x8d': {'name': 'seresnext101_32x8d', **_D},
    'seresnext101_64x4d': {'name': 'seresnext101_64x4d', **_B},
    # stem_width=32, stem_type='deep', replace_stem_pool=True, avg_down=True,
    # SE with rd_ratio=0.25.
    **{f'resnetrs{d}': {'name': f'resnetrs{d}', 'shortcut': 'D'}
       for d in models.registry.RS_DEPTHS},
}

ARCHS: dict[str, dict[str, dict[str, Any]]] = {'torchvision': TORCHVISION, 'timm': TIMM}
_CIFAR_ARCH = re.compile(r'cifar_resnet(\d+)$')
CIFAR_SHORTCUTS = ('A', 'B', 'C', 'none')


def _listing(keys: list[str]) -> str:
  more = f' ... ({len(keys)} in all)' if len(keys) > MAX_LISTED else ''
  return ', '.join(keys[:MAX_LISTED]) + more


def _check_source(source: str) -> None:
  if source not in SOURCES:
    raise ConfigError(f'source={source!r} is not supported; valid: {", ".join(SOURCES)}')


def arch_names(source: str) -> list[str]:
  """The architectures a source supports (torch_cifar: a pattern)."""
  _check_source(source)
  if source == 'torch_cifar':
    return ['cifar_resnet<6n+2>']
  return list(ARCHS[source])


def model_config(arch: str, source: str, *, shortcut: str | None = None) -> dict[str, Any]:
  """Our `model` config fields for a torchvision/timm/CIFAR architecture name.

  Args:
    arch: e.g. 'resnet50' (torchvision, timm), 'resnet50d' (timm),
      'cifar_resnet56' (torch_cifar).
    source: 'torchvision', 'timm' or 'torch_cifar'.
    shortcut: torch_cifar only: 'A' (default), 'B', 'C' or 'none'.

  Raises:
    ConfigError: an unknown source or architecture (names the valid ones).
  """
  _check_source(source)
  if source == 'torch_cifar':
    match = _CIFAR_ARCH.match(arch)
    if not match:
      raise ConfigError(f'arch={arch!r} is not a torch_cifar architecture; valid: '
                        'cifar_resnet<depth> with depth 6n+2 (20, 32, 44, 56, 110, ...)')
    shortcut = 'A' if shortcut is None else shortcut
    if shortcut not in CIFAR_SHORTCUTS:
      raise ConfigError(f'shortcut={shortcut!r} is not valid for torch_cifar; valid: '
                        f'{", ".join(CIFAR_SHORTCUTS)}')
    config = {'family': 'cifar', 'depth': int(match.group(1)), 'block': 'basic',
              'shortcut': shortcut}
    models.resolve_spec(config)  # A depth that is not 6n+2 fails here.
    return config
  if shortcut is not None:
    raise ConfigError(f'shortcut= applies to torch_cifar only: {source} {arch!r} fixes it')
  if arch not in ARCHS[source]:
    raise ConfigError(f'arch={arch!r} is not a {source} architecture that resnet_jax '
                      f'expresses; valid: {", ".join(ARCHS[source])}')
  return dict(ARCHS[source][arch])


def resolved_model_config(arch: str, source: str, *,
                          shortcut: str | None = None) -> dict[str, Any]:
  """Every `model` field, the variant applied: unambiguous in a config file."""
  return models.registry.merged_fields(model_config(arch, source, shortcut=shortcut))


# --- Our variables, traced --------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _traced(config_items: tuple, num_classes: int) -> tuple:
  """((path, shape), ...) of the model's variables: traced, nothing computed."""
  model = models.create_model(dict(config_items), num_classes=num_classes)
  # Parameter shapes do not depend on the image size: trace a small one.
  shapes = jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.PRNGKey(0),
      jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes))
  return tuple((path, tuple(leaf.shape)) for path, leaf in flat.items())


_PART = re.compile(r'([a-z_]+)(\d*)$')
_KIND_RANK = {'conv': 0, 'norm': 1}
_TOP_RANK = {'stem': 0, 'head': 2}
_LEAF_RANK = {'kernel': 0, 'scale': 0, 'bias': 1, 'mean': 2, 'var': 3}
# Modules PyTorch registers after a block's (or stem's) own convs and norms, in
# this order: SE, then the shortcut (timm's `se` before `downsample`); the
# stem's conv pool after its convs and bn1 (timm's `maxpool`).
_AFTER_RANK = {'se': 1, 'shortcut': 2, 'pool': 1}


def _forward_order(path: tuple[str, ...]) -> tuple:
  """Sort key: modules in forward order (as PyTorch registers them), then leaves."""
  collection, top, *middle, leaf = path
  key = [_TOP_RANK.get(top, 1), int(top[5:]) if top.startswith('stage') else 0]
  for part in middle:
    if part in _AFTER_RANK:
      key.append((_AFTER_RANK[part], 0, 0))
      continue
    group, _, name = part.rpartition('_')  # 'pool_conv' -> 'pool', 'conv'.
    kind, index = _PART.match(name).groups()
    key.append((_AFTER_RANK.get(group, 0), int(index or 0), _KIND_RANK.get(kind, 2)))
  return (*key, _LEAF_RANK[leaf], collection)


def variable_shapes(config: Mapping[str, Any], num_classes: int,
                    ) -> dict[tuple[str, ...], tuple[int, ...]]:
  """{('params', 'stem', 'conv1', 'kernel'): shape, ...} of the model, in forward order."""
  shapes = _traced(tuple(sorted(config.items())), int(num_classes))
  return dict(sorted(shapes, key=lambda item: _forward_order(item[0])))


# --- Names ------------------------------------------------------------------------


def _module_name(module: tuple[str, ...], spec: models.ResNetSpec, source: str) -> str:
  """PyTorch's module name for one of our modules, e.g. ('stage1', 'block1', 'conv1')."""
  if source == 'torch_cifar':
    if module[0] == 'stem':
      return module[1]
    if module[0] == 'head':
      return module[1]
    stage, block, *rest = module
    name = 'sc_' + rest[1] if rest[0] == 'shortcut' else rest[0]
    return f'blocks.{stage}__{block}.{name}'
  if module[0] == 'stem':
    if module[1].startswith('pool_'):
      # timm's replace_stem_pool: Sequential(conv, bn, act) named maxpool.
      return f'maxpool.{int(module[1] == "pool_norm")}'
    kind, k = module[1][:-1], int(module[1][-1])
    if spec.stem == 'imagenet':
      return 'conv1' if kind == 'conv' else 'bn1'
    # timm's deep stem: Sequential(conv, bn, act, conv, bn, act, conv), then bn1.
    if kind == 'norm' and k == 3:
      return 'bn1'
    return f'conv1.{3 * (k - 1) + (kind == "norm")}'
  if module[0] == 'head':
    return module[1]  # 'fc'
  stage, block, *rest = module
  prefix = f'layer{int(stage[5:])}.{int(block[5:]) - 1}'
  if rest[0] == 'shortcut':
    # timm's avg_down Sequential starts with the pool (an Identity where only the
    # width changes), so the conv and norm are .1 and .2 there.
    first = 1 if spec.shortcut == 'D' else 0
    return f'{prefix}.downsample.{first + (rest[1] == "norm")}'
  if rest[0] == 'se':
    return f'{prefix}.se.{rest[1]}'  # fc1, fc2
  kind, k = rest[0][:-1], rest[0][-1]
  return f'{prefix}.{"conv" if kind == "conv" else "bn"}{k}'


_LEAF_NAMES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
               'var': 'running_var'}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One PyTorch tensor and where it lives in our variables.

  Attributes:
    key: the state-dict key, e.g. 'layer1.0.conv1.weight'.
    path: our variables path, e.g. ('params', 'stage1', 'block1', 'conv1', 'kernel');
      None for num_batches_tracked, which has no counterpart.
    shape: PyTorch's shape.
  """
  key: str
  path: tuple[str, ...] | None
  shape: tuple[int, ...]


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if leaf == 'kernel' and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if leaf == 'kernel' and len(shape) == 2:
    return (shape[1], shape[0])
  return shape


def to_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
  """Our array as PyTorch stores it (conv HWIO -> OIHW, Dense (in, out) -> (out, in))."""
  if leaf == 'kernel' and array.ndim == 4:
    return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
  if leaf == 'kernel' and array.ndim == 2:
    return np.ascontiguousarray(array.T)
  return np.asarray(array)


def from_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
  """The inverse of to_torch_layout."""
  if leaf == 'kernel' and array.ndim == 4:
    return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
  if leaf == 'kernel' and array.ndim == 2:
    return np.ascontiguousarray(array.T)
  return np.asarray(array)


def table(config: Mapping[str, Any], num_classes: int, source: str) -> list[Entry]:
  """PyTorch's state dict of the model `config` describes, in its own key order.

  Per module: weight, bias, then (BatchNorm) running_mean, running_var,
  num_batches_tracked, modules in forward order, as `nn.Module.state_dict()`.
  """
  _check_source(source)
  spec = models.resolve_spec(config)
  shapes = variable_shapes(config, num_classes)
  stats: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
  for path in shapes:
    if path[0] == 'batch_stats':
      stats.setdefault(path[1:-1], []).append(path)
  entries, seen = [], set()
  params = [p for p in shapes if p[0] == 'params']
  for i, path in enumerate(params):
    module, leaf = path[1:-1], path[-1]
    name = _module_name(module, spec, source)
    leaf_name = 'weight' if leaf == 'kernel' else _LEAF_NAMES[leaf]
    entries.append(Entry(f'{name}.{leaf_name}', path, _torch_shape(leaf, shapes[path])))
    last_of_module = i + 1 == len(params) or params[i + 1][1:-1] != module
    if last_of_module and module in stats:
      for stat in sorted(stats[module], key=lambda p: p[-1] != 'mean'):
        entries.append(Entry(f'{name}.{_LEAF_NAMES[stat[-1]]}', stat, shapes[stat]))
      entries.append(Entry(f'{name}.{NUM_BATCHES_TRACKED}', None, ()))
      seen.add(module)
  if set(stats) - seen:  # A statistics-only module would be silently dropped.
    raise AssertionError(f'norm statistics without parameters: {sorted(set(stats) - seen)}')
  return entries


def key_table(arch: str, source: str, *, num_classes: int = 1000,
              shortcut: str | None = None) -> dict[str, tuple[int, ...]]:
  """{key: shape} of the PyTorch model's `state_dict()` for `arch` (no weights)."""
  config = model_config(arch, source, shortcut=shortcut)
  return {e.key: e.shape for e in table(config, num_classes, source)}


# --- Import -----------------------------------------------------------------------


def _shape(x) -> tuple[int, ...]:
  return tuple(int(d) for d in np.shape(x))


def _fmt(shape: tuple[int, ...]) -> str:
  return '(' + ','.join(map(str, shape)) + (',' if len(shape) == 1 else '') + ')'


def _mismatch(what: str, missing: list[str], unexpected: list[str],
              wrong: list[str], hint: str = '') -> ConfigError:
  parts = []
  if missing:
    parts.append(f'missing: {_listing(missing)}')
  if unexpected:
    parts.append(f'unexpected: {_listing(unexpected)}')
  if wrong:
    parts.append(f'wrong shape: {_listing(wrong)}')
  return ConfigError(f'{what}: ' + '; '.join(parts) + (f'. {hint}' if hint else ''))


def _infer_cifar_shortcut(keys) -> str:
  """'C' (a projection in every block), 'B' (where the shape changes) or 'A'."""
  blocks = {k.split('.')[1] for k in keys if k.startswith('blocks.')}
  projected = {k.split('.')[1] for k in keys if k.startswith('blocks.') and '.sc_' in k}
  if not projected:
    return 'A'
  return 'C' if projected == blocks else 'B'


def _num_classes(state_dict: Mapping[str, Any], what: str) -> int:
  fc = state_dict.get('fc.weight')
  if fc is None or len(_shape(fc)) != 2:
    raise ConfigError(f'{what}: no classifier weight fc.weight (out, in) in the state dict; '
                      'its shape gives the number of classes')
  return _shape(fc)[0]


def from_state_dict(state_dict: Mapping[str, Any], arch: str, source: str, *,
                    shortcut: str | None = None) -> tuple[models.ResNet, dict[str, Any]]:
  """A PyTorch state dict as our model and variables, every tensor accounted for.

  Args:
    state_dict: {key: array} as `model.state_dict()` of the PyTorch model (numpy
      arrays or anything `np.asarray` takes, e.g. CPU tensors).
    arch: the PyTorch model's name (`arch_names(source)`), e.g. 'resnet50'.
    source: 'torchvision', 'timm' or 'torch_cifar'.
    shortcut: torch_cifar only; default: read from the keys (a projection in
      every block 'C', where the shape changes 'B', none 'A'; a plain network
      has A's keys, pass 'none' for it).

  Returns:
    (model, variables): `models.create_model` of the matching variant (float32,
    classes from fc.weight) and {'params': ..., 'batch_stats': ...} of float32
    numpy arrays, ready for `model.apply(variables, images, train=False)`.

  Raises:
    ConfigError: unknown source or arch; keys missing, unexpected or of the
      wrong shape (each kind named, at most MAX_LISTED of each).
  """
  what = f'{source} {arch} state dict'
  if source == 'torch_cifar' and shortcut is None:
    shortcut = _infer_cifar_shortcut(state_dict)
  config = model_config(arch, source, shortcut=shortcut)
  num_classes = _num_classes(state_dict, what)
  entries = table(config, num_classes, source)
  by_key = {e.key: e for e in entries}
  missing = [e.key for e in entries if e.path is not None and e.key not in state_dict]
  # Ignored on purpose (module docstring): present or not, never an error.
  unexpected = [k for k in state_dict if k not in by_key]
  wrong = [f'{k}: file {_fmt(_shape(v))} vs model {_fmt(by_key[k].shape)}'
           for k, v in state_dict.items()
           if k in by_key and by_key[k].path is not None and _shape(v) != by_key[k].shape]
  if missing or unexpected or wrong:
    hint = ''
    if unexpected and all(k.startswith('module.') for k in unexpected):
      hint = ("The keys start with 'module.' (saved from DataParallel): strip that "
              'prefix first')
    elif not any(k in by_key for k in state_dict if not k.startswith('fc.')):
      hint = f'None of the keys match: is it a {source} {arch}?'
    raise _mismatch(f'{what} does not match', missing, unexpected, wrong, hint)
  flat = {}
  for e in entries:
    if e.path is None:
      continue
    value = np.asarray(state_dict[e.key])
    if not np.issubdtype(value.dtype, np.floating):
      raise ConfigError(f'{what}: {e.key} has dtype {value.dtype}, expected floating point')
    flat[e.path] = from_torch_layout(e.path[-1], value.astype(np.float32, copy=False))
  variables = flax.traverse_util.unflatten_dict(flat)
  model = models.create_model(config, num_classes=num_classes)
  return model, variables


# --- Export -----------------------------------------------------------------------


def _flat_variables(variables: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
  tree = {k: v for k, v in flax.core.unfreeze(variables).items()
          if k in ('params', 'batch_stats') and v}
  return flax.traverse_util.flatten_dict(tree)


def _infer_cifar_shortcut_ours(flat) -> str:
  blocks = {p[1:3] for p in flat if p[0] == 'params' and p[1].startswith('stage')}
  projected = {p[1:3] for p in flat if p[0] == 'params' and len(p) > 3 and p[3] == 'shortcut'}
  if not projected:
    return 'A'
  return 'C' if projected == blocks else 'B'


def to_state_dict(variables: Mapping[str, Any], arch: str, source: str,
                  ) -> dict[str, np.ndarray]:
  """Our variables as the PyTorch model's state dict: `from_state_dict`'s inverse.

  Args:
    variables: {'params': ..., 'batch_stats': ...} of the model of `arch` (any
      number of classes), e.g. `checkpoint.read_state(path)[0]`.
    arch: the PyTorch architecture, as for from_state_dict.
    source: 'torchvision', 'timm' or 'torch_cifar'.

  Returns:
    {key: float32 numpy array} in the PyTorch model's key order, with
    num_batches_tracked as int64 zeros: what `load_state_dict(strict=True)`
    accepts.

  Raises:
    ConfigError: the variables are not those of `arch` (arrays named).

  Note: the check is by names and shapes. Two architectures with the same
  tensors (e.g. a bottleneck stride on the first 1x1 vs the 3x3) cannot be
  told apart here; the export command also compares the run's config.
  """
  flat = _flat_variables(variables)
  head = flat.get(('params', 'head', 'fc', 'kernel'))
  what = f'variables for {source} {arch}'
  if head is None or len(_shape(head)) != 2:
    raise ConfigError(f'{what}: no classifier params/head/fc/kernel')
  shortcut = _infer_cifar_shortcut_ours(flat) if source == 'torch_cifar' else None
  config = model_config(arch, source, shortcut=shortcut)
  entries = table(config, _shape(head)[1], source)
  expected = variable_shapes(config, _shape(head)[1])
  name = lambda p: '/'.join(p)
  missing = [name(p) for p in expected if p not in flat]
  unexpected = [name(p) for p in flat if p not in expected]
  wrong = [f'{name(p)}: given {_fmt(_shape(v))} vs {arch} {_fmt(expected[p])}'
           for p, v in flat.items() if p in expected and _shape(v) != expected[p]]
  if missing or unexpected or wrong:
    raise _mismatch(f'{what} do not match the architecture', missing, unexpected, wrong)
  out = {}
  for e in entries:
    if e.path is None:
      out[e.key] = np.zeros((), np.int64)
    else:
      value = np.asarray(flat[e.path])
      out[e.key] = to_torch_layout(e.path[-1], value.astype(np.float32, copy=False))
  return out


# --- Which architecture is this model? --------------------------------------------


def _shape_of(spec: models.ResNetSpec) -> tuple:
  """What decides the function of given weights (not momentum, init or name)."""
  inner = tuple(spec.inner_width(p) for p in spec.stage_widths) if (
      spec.block == 'bottleneck') else ()
  return (spec.family, spec.block, spec.stage_sizes, spec.stage_widths, inner,
          spec.stem, spec.stem_width, spec.stem_pool, spec.shortcut, spec.preact,
          spec.bottleneck_stride, spec.groups, spec.norm,
          spec.num_groups if spec.norm == 'group' else 0, spec.se_ratio)


def find_arch(model_config_: Any, source: str) -> str:
  """The `source` architecture that computes what `model_config_` does.

  Raises:
    ConfigError: no architecture of `source` is this model (says why).
  """
  _check_source(source)
  spec = models.resolve_spec(model_config_)
  if source == 'torch_cifar':
    if spec.family == 'cifar' and spec.block == 'basic' and not spec.preact and (
        spec.stem == 'cifar' and spec.norm == 'batch' and spec.stem_width == 16
        and spec.width_multiplier == 1 and spec.shortcut in CIFAR_SHORTCUTS
        and not spec.se_ratio):
      return f'cifar_resnet{spec.depth}'
  else:
    for arch in ARCHS[source]:
      if _shape_of(models.resolve_spec(ARCHS[source][arch])) == _shape_of(spec):
        return arch
  raise ConfigError(f'this model ({spec.describe()}) is not '
                    f'one that {source} has; {source} architectures: '
                    f'{", ".join(arch_names(source))}')


def same_architecture(model_config_: Any, arch: str, source: str) -> bool:
  """Whether a run's model config computes what `arch` of `source` does."""
  if source == 'torch_cifar':
    try:
      return find_arch(model_config_, source) == arch
    except ConfigError:
      return False
  return _shape_of(models.resolve_spec(model_config(arch, source))) == _shape_of(
      models.resolve_spec(model_config_))
