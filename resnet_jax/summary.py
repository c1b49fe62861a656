r"""Per-part table of a config's model: output shapes, parameters, MACs and FLOPs.

    python -m resnet_jax.summary --config=configs/r50.py
    python -m resnet_jax.summary --config=configs/cifar10.py:depth=56,shortcut=A
    python -m resnet_jax.summary --config=configs/r50.py --config.model.depth=18 \
        --image_size=160

Two operation counts, per image, for one inference forward pass:
  MACs  - multiply-accumulates of the convs and the classifier, counting every
          kernel tap including those on zero padding: the convention of
          torchvision's model table and fvcore (ResNet-50 at 224: 4.09 G).
  FLOPs - what XLA's cost analysis of the compiled forward pass reports. XLA
          skips taps on padding and adds the elementwise work (norm, ReLU,
          residual adds), so it is close to, not exactly, 2 x MACs (ResNet-50:
          8.00 G against 2 x 4.09 = 8.18 G).

The functions (count_params, count_macs, xla_flops, forward_flops, summarize)
are importable, e.g. by the benchmark. Nothing is computed on real data:
parameters are abstract (jax.eval_shape) and the passes are only compiled.
"""

import dataclasses
import math
from typing import Any, Callable, Sequence

from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from resnet_jax import models
from resnet_jax import cli
from resnet_jax.errors import ConfigError

def count_params(params: Any) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs (exact int)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def _sub_jaxprs(params: dict) -> list:
  """Jaxprs nested in an equation's params (jit, custom_jvp, scan, cond...)."""
  out = []
  for value in params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(v, 'eqns'):  # Jaxpr (duck-typed: the class moves between jax versions).
        out.append(v)
      elif hasattr(v, 'jaxpr') and hasattr(getattr(v, 'jaxpr'), 'eqns'):  # ClosedJaxpr.
        out.append(v.jaxpr)
  return out


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      kernel = eqn.invars[1].aval.shape
      rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out, in, *spatial)
      # The kernel's input dim is already in_channels / groups.
      per_output = kernel[rhs_spec[1]] * math.prod(kernel[d] for d in rhs_spec[2:])
      total += math.prod(eqn.outvars[0].aval.shape) * per_output
    elif name == 'dot_general':
      (lhs_contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
    for sub in _sub_jaxprs(eqn.params):
      total += _jaxpr_macs(sub)
  return total


def count_macs(fn: Callable, *args) -> int:
  """Conv and matmul multiply-accumulates of `fn(*args)`, padding taps included.

  Args may be arrays or jax.ShapeDtypeStructs; `fn` is only traced.
  """
  return _jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


def xla_flops(fn: Callable, *args) -> float:
  """FLOPs XLA's cost analysis reports for the compiled `jax.jit(fn)(*args)`.

  Args may be arrays or jax.ShapeDtypeStructs; nothing is executed.
  """
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per computation.
    analysis = analysis[0]
  return float(analysis['flops'])


def abstract_variables(model: nn.Module, input_shape: Sequence[int]) -> Any:
  """The model's variables as ShapeDtypeStructs (no initialisation is run)."""
  x = jnp.zeros((1, *input_shape), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _forward(model: nn.Module) -> Callable:
  return lambda variables, x: model.apply(variables, x, train=False)


def forward_flops(model: nn.Module, input_shape: Sequence[int], *,
                  variables: Any = None) -> float:
  """XLA FLOPs of one inference forward pass of `model` per image.

  Args:
    model: a ResNet (anything applied as `model.apply(v, x, train=False)`).
    input_shape: one image's shape, (H, W, C).
    variables: the model's variables, or None to use abstract ones.
  """
  variables = abstract_variables(model, input_shape) if variables is None else variables
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  return xla_flops(_forward(model), variables, x)


def forward_macs(model: nn.Module, input_shape: Sequence[int], *,
                 variables: Any = None) -> int:
  """Conv + dense MACs of one forward pass per image (torchvision's convention)."""
  variables = abstract_variables(model, input_shape) if variables is None else variables
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  return count_macs(_forward(model), variables, x)


@dataclasses.dataclass(frozen=True)
class Row:
  """One part of the network (stem, stageK, head) for one image."""
  name: str
  output_shape: tuple[int, ...]
  params: int
  macs: int
  flops: float


@dataclasses.dataclass(frozen=True)
class Summary:
  """Per-part rows and whole-network totals (per image)."""
  description: str
  input_shape: tuple[int, ...]
  num_classes: int
  rows: tuple[Row, ...]
  total_params: int
  total_macs: int
  total_flops: float


def summarize(model: models.ResNet, input_shape: Sequence[int]) -> Summary:
  """Measures each part of `model` and the whole forward pass.

  Each part is applied on its own (ResNet.parts(detached=True)) with its slice
  of the variables, so its MACs and XLA FLOPs are its own; the totals come
  from the whole network's pass.

  Args:
    model: a ResNet from models.create_model.
    input_shape: one image's shape, (H, W, C).
  """
  input_shape = tuple(input_shape)
  variables = abstract_variables(model, input_shape)
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  rows = []
  for name, part in model.parts(train=False, detached=True):
    part_vars = {col: tree[name] for col, tree in variables.items() if name in tree}
    fn = lambda v, x, part=part: part.apply(v, x)
    y = jax.eval_shape(fn, part_vars, x)
    rows.append(Row(name=name, output_shape=tuple(y.shape[1:]),
                    params=count_params(part_vars.get('params', {})),
                    macs=count_macs(fn, part_vars, x), flops=xla_flops(fn, part_vars, x)))
    x = jax.ShapeDtypeStruct(y.shape, y.dtype)
  return Summary(
      description=model.spec.describe(), input_shape=input_shape,
      num_classes=model.num_classes, rows=tuple(rows),
      total_params=count_params(variables['params']),
      total_macs=forward_macs(model, input_shape, variables=variables),
      total_flops=forward_flops(model, input_shape, variables=variables))


def _si(value: float) -> str:
  for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
    if abs(value) >= scale:
      return f'{value / scale:.3f} {unit}'
  return f'{value:.0f}'


def format_summary(s: Summary) -> str:
  """The table and totals as printed by the CLI."""
  shape = lambda t: 'x'.join(map(str, t))
  header = f'{"part":<8} {"output":>13} {"params":>12} {"MACs":>12} {"FLOPs (XLA)":>12}'
  lines = [s.description,
           f'input {shape(s.input_shape)}, {s.num_classes} classes, per image, '
           'inference forward pass', '', header, '-' * len(header)]
  for r in s.rows:
    lines.append(f'{r.name:<8} {shape(r.output_shape):>13} {r.params:>12,} '
                 f'{_si(r.macs):>12} {_si(r.flops):>12}')
  lines += ['-' * len(header),
            f'{"total":<8} {"":>13} {s.total_params:>12,} {_si(s.total_macs):>12} '
            f'{_si(s.total_flops):>12}', '',
            f'trainable parameters: {s.total_params:,} ({s.total_params})',
            f'forward MACs per image: {s.total_macs / 1e9:.3f} G ({s.total_macs:,}; '
            'conv + dense multiply-adds, padding taps included, torchvision convention)',
            f'forward FLOPs per image: {s.total_flops / 1e9:.3f} G ({s.total_flops:,.0f}; '
            'XLA cost analysis of the compiled pass)']
  return '\n'.join(lines)


# --- Command line -------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
  """summary's flags (see cli.run)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/cifar10.py:depth=56,shortcut=A.',
      lock_config=True)
  flags.DEFINE_integer('image_size', 0, 'Input resolution (0: from the config/dataset).')
  flags.DEFINE_integer('num_classes', 0, 'Classes (0: from the config/dataset).')


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS['verbosity'].present:
    # A table, not a log, is the output; tfds warns about unprepared datasets
    # that the built-in table then answers for.
    logging.set_verbosity(logging.ERROR)
  if FLAGS.config is None:
    raise ConfigError('--config is required, e.g. --config=configs/r50.py')
  config = FLAGS.config.copy_and_resolve_references()
  with config.unlocked():
    config.image_size = FLAGS.image_size or config.image_size
    config.num_classes = FLAGS.num_classes or config.num_classes
  from resnet_jax import specs  # pylint: disable=g-import-not-at-top
  from resnet_jax import data  # pylint: disable=g-import-not-at-top
  run = specs.resolve(config)
  input_shape, num_classes = data.input_shape(run.data)
  # The plain layers: the FLOPs shown are the model's, not a backend's formulation.
  model = models.create_model(run.model, num_classes=num_classes, cpu_fast_paths=False)
  print(format_summary(summarize(model, input_shape)))
  return 0


if __name__ == '__main__':
  cli.run(main, define_flags)
