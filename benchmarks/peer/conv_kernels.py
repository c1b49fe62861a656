r"""One convolution's forward, input gradient and weight gradient: XLA:CPU against PyTorch.

    benchmarks/peer/.venv/bin/python benchmarks/peer/conv_kernels.py            # float32
    benchmarks/peer/.venv/bin/python benchmarks/peer/conv_kernels.py --dtype=bfloat16

The CIFAR ResNet shapes (batch 128, 3x3, stride 1 at 32/16/8 pixels with 16/32/64
channels, and the two stride-2 convs that open stages 2 and 3). JAX: the jitted
`lax.conv_general_dilated` (NHWC, HWIO) and its two `jax.vjp` gradients; torch:
`F.conv2d` and `aten.convolution_backward`, channels_last. Rounds alternate between
all kernels of a shape; prints one JSON line per shape with median milliseconds.
"""

import json
import statistics
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
flags.DEFINE_integer('rounds', 7, 'Timed rounds per kernel.')
flags.DEFINE_integer('calls', 5, 'Calls per round.')

# (batch, height, width, in channels, out channels, kernel, stride)
SHAPES = [(128, 32, 32, 16, 16, 3, 1), (128, 16, 16, 32, 32, 3, 1), (128, 8, 8, 64, 64, 3, 1),
          (128, 32, 32, 16, 32, 3, 2), (128, 16, 16, 32, 64, 3, 2)]


def jax_kernels(shape, dtype):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n, h, w, c, co, k, s = shape
  dt = jnp.dtype(dtype)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (n, h, w, c), dt)
  kernel = (0.1 * jax.random.normal(keys[1], (k, k, c, co))).astype(dt)
  g = jax.random.normal(keys[2], (n, h // s, w // s, co), dt)
  conv = lambda x, kernel: jax.lax.conv_general_dilated(
      x, kernel, (s, s), ((k // 2, k // 2),) * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  fns = {'fwd': jax.jit(conv),
         'input_grad': jax.jit(lambda x, kernel, g: jax.vjp(lambda x: conv(x, kernel), x)[1](g)),
         'weight_grad': jax.jit(lambda x, kernel, g: jax.vjp(lambda w: conv(x, w), kernel)[1](g))}
  args = {'fwd': (x, kernel), 'input_grad': (x, kernel, g), 'weight_grad': (x, kernel, g)}
  return {f'jax_{name}': (lambda f=f, a=args[name]: jax.block_until_ready(f(*a)))
          for name, f in fns.items()}


def torch_kernels(shape, dtype):
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  n, h, w, c, co, k, s = shape
  dt = torch.bfloat16 if dtype == 'bfloat16' else torch.float32
  cl = torch.channels_last
  torch.manual_seed(0)
  x = torch.randn(n, c, h, w).to(dt).contiguous(memory_format=cl)
  kernel = (0.1 * torch.randn(co, c, k, k)).to(dt).contiguous(memory_format=cl)
  g = torch.randn(n, co, h // s, w // s).to(dt).contiguous(memory_format=cl)
  back = lambda mask: torch.ops.aten.convolution_backward(
      g, x, kernel, None, (s, s), (k // 2, k // 2), (1, 1), False, (0, 0), 1, mask)
  return {'torch_fwd': lambda: F.conv2d(x, kernel, stride=s, padding=k // 2),
          'torch_input_grad': lambda: back((True, False, False)),
          'torch_weight_grad': lambda: back((False, True, False))}


def main(argv):
  del argv
  for shape in SHAPES:
    kernels = {**jax_kernels(shape, FLAGS.dtype), **torch_kernels(shape, FLAGS.dtype)}
    for fn in kernels.values():  # Compile / warm up.
      fn()
      fn()
    times = {name: [] for name in kernels}
    for _ in range(FLAGS.rounds):
      for name, fn in kernels.items():
        start = time.perf_counter()
        for _ in range(FLAGS.calls):
          fn()
        times[name].append(1000 * (time.perf_counter() - start) / FLAGS.calls)
    print(json.dumps({'shape_nhwc_cin_cout_k_stride': shape, 'dtype': FLAGS.dtype,
                      **{k: round(statistics.median(v), 2) for k, v in times.items()}}),
          flush=True)


if __name__ == '__main__':
  app.run(main)
