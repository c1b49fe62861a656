"""Layer formulations that XLA:CPU runs faster, computing the same values.

Used by `ResNet` on the CPU backend only (`ResNet.cpu_fast_paths`,
`--config.cpu_fast_paths`); other backends and `cpu_fast_paths=False` use
flax's and lax's own layers. Parameter names, shapes and counts are untouched:
these are functions, not modules. Measurements: benchmarks/RESULTS.md, "CPU
speed work".

relu: XLA:CPU's fusion pass may recompute an elementwise producer inside
  every consumer instead of reading it from memory, and `max(x, 0)` counts as
  free to recompute (one array operand). Through identity shortcuts the
  residual stream is a chain of such producers, so in the backward pass each
  consumer recomputed the stream of every earlier block: cost quadratic in the
  blocks per stage (ResNet-110 A 2.5x slower than C per step, 0.77x with this).
  `where(not x <= 0, x, 0)` has the same values (NaN stays NaN, as in max) but
  reads two arrays, which XLA:CPU does not duplicate into a consumer when
  another consumer (the next conv) needs the value in memory anyway; and the
  derivative's mask is taken from the output, so the backward pass does not
  reach back into the block's inputs either.
"""

import jax
import jax.numpy as jnp


def _relu_value(x: jax.Array) -> jax.Array:
  # `not (x <= 0)` rather than `x > 0`: also true for NaN, so NaN propagates as
  # with jnp.maximum(x, 0) (XLA turns x * (x > 0) into a select that drops it).
  return jnp.where(jnp.logical_not(x <= 0), x, jnp.zeros((), x.dtype))


@jax.custom_jvp
def relu(x: jax.Array) -> jax.Array:
  """max(x, 0), with a forward and backward pass that XLA:CPU keeps linear in depth.

  Values and derivatives equal `flax.linen.relu`'s (0 at x <= 0 and at NaN);
  forward- and reverse-mode differentiation both work (a custom JVP, whose
  transpose is the backward pass).
  """
  return _relu_value(x)


@relu.defjvp
def _relu_jvp(primals, tangents):
  y = relu(primals[0])
  # y > 0 exactly where x > 0: the mask needs only the output, which is in
  # memory anyway, not the block's inputs.
  return y, jnp.where(y > 0, tangents[0], jnp.zeros((), tangents[0].dtype))


def enabled(requested: bool) -> bool:
  """Whether to use the CPU formulations: requested, and JAX computes on the CPU."""
  return bool(requested) and jax.default_backend() == 'cpu'
