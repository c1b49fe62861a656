r"""Training throughput of a config: images/s, step time, compile time and MFU.

    python -m resnet_jax.benchmark --config=configs/fake_data.py:model=r50
    python -m resnet_jax.benchmark --config=configs/fake_data.py:model=cifar20 \
        --steps=200 --estimate_steps=64000
    python -m resnet_jax.benchmark --config=configs/fake_data.py:model=r50 \
        --batch_size=8 --steps=3 --warmup=1 --config.dtype=float32

What is timed is the training step itself, exactly as `resnet_jax.train` runs
it: `Experiment.compile_train_step()` (the real `train_step`, jit of shard_map
over every device, state donated, compiled ahead of time), on one synthetic
batch that is already on the devices, so no input pipeline is in the timed
loop. The data of the config are never read: the benchmark runs on synthetic
data of the config's image size and classes (or the dataset's known shape). `--warmup` steps run
first and are excluded; the clock is read after `block_until_ready` at the two
ends of the timed window only, so steps are dispatched back to back as in
training (no host sync per step).

Speed experiments: `--nodonate` times the same step without buffer donation;
`--host_input=uint8|float32` transfers a host batch of that image dtype every
step inside the timed loop (`--prefetch=N` keeps N in flight), to price the
host-to-device input. XLA flags come from the XLA_FLAGS environment variable
(see benchmarks/run_gpu.sh).

Prints one JSON line on stdout (logs go to stderr) and appends it to
`--output` when given. Its keys include:

  images_per_sec   global batch / step time
  step_time_ms     timed seconds / steps (median over --repeats windows, each
                   listed in step_time_ms_windows)
  compile_s        trace + lower + XLA compile of the train step
  recompiles       XLA compilations after that while stepping (must be 0)
  flops_per_step   XLA cost analysis of the compiled step (one device's
                   program), times the number of devices
  mfu              flops_per_step / step time / (peak per device * devices);
                   null where the peak is unknown (CPU) and --peak_tflops unset
  model, image_size, batch_size, per_device_batch, dtype, device, platform,
  num_devices, steps, warmup, jax_version, jaxlib_version, flax_version,
  xla_flags, date   what was measured, where, with what
  peak_memory_gb   the device allocator's peak (GPU/TPU; null on CPU)
  max_rss_gb       the process's peak resident memory (the CPU backend's memory)
  estimated_time_for_steps   seconds for --estimate_steps steps at this step
                   time (no compile, eval or input pipeline)
  h2d_ms_per_batch with --host_input: one bare host-to-device batch transfer
  tensorflow_imported   must be false: the GPU machine has no TensorFlow

MFU here is model-FLOP utilisation as XLA counts the step's FLOPs (forward,
backward, optimizer and BatchNorm work included), against the dense (no
sparsity) tensor-core / MXU peak for the compute dtype.
"""

import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Iterator

from absl import flags
from absl import logging
import flax
import jax
from ml_collections import config_flags
import numpy as np

from resnet_jax import cli
from resnet_jax import parallel
from resnet_jax import train
from resnet_jax import specs
from resnet_jax.data import placement
from resnet_jax.errors import ConfigError

# Dense peak TFLOP/s per JAX device, by compute dtype; matched against the
# lower-cased `device_kind` in order, first substring match wins (so the more
# specific names come first). Sources are the vendors' public spec sheets;
# NVIDIA lists tensor-core figures "with sparsity", which are halved here.
# float32 on Ampere and later is the TF32 tensor-core peak: XLA runs float32
# convolutions and matmuls in TF32 there at the default precision. On TPUs,
# float32 convolutions at the default precision run as one bfloat16 MXU pass,
# so the bfloat16 peak applies. float16 has the bfloat16 peak everywhere.
_PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    # NVIDIA H100 datasheet (PCIe): BF16 1,513 / TF32 756 TFLOPS with sparsity.
    ('h100 pcie', {'bfloat16': 756.0, 'float32': 378.0}),
    # NVIDIA H100 datasheet (NVL): BF16 1,671 / TF32 835 TFLOPS with sparsity.
    ('h100 nvl', {'bfloat16': 835.5, 'float32': 417.5}),
    # NVIDIA H200 datasheet (NVL): BF16 1,671 / TF32 835 TFLOPS with sparsity.
    ('h200 nvl', {'bfloat16': 835.5, 'float32': 417.5}),
    # NVIDIA H100 datasheet (SXM, 'NVIDIA H100 80GB HBM3'), H200 datasheet (SXM)
    # and GH200 datasheet: BF16 1,979 / TF32 989 TFLOPS with sparsity.
    ('h100', {'bfloat16': 989.4, 'float32': 494.7}),
    ('h200', {'bfloat16': 989.4, 'float32': 494.7}),
    # NVIDIA A100 datasheet (SXM4 and PCIe, 40/80 GB): BF16 312 / TF32 156 dense.
    ('a100', {'bfloat16': 312.0, 'float32': 156.0}),
    # NVIDIA V100 datasheet: tensor (FP16) 112 PCIe / 125 SXM2, FP32 14 / 15.7.
    # Volta has no bfloat16 tensor cores: its bfloat16 entry is the FP16
    # tensor-core ceiling that mixed precision can reach on it.
    ('v100-pcie', {'bfloat16': 112.0, 'float32': 14.0}),
    ('v100', {'bfloat16': 125.0, 'float32': 15.7}),
    # Google Cloud TPU system-architecture pages, peak compute per chip (bf16);
    # one JAX device per chip on v4/v5p (megacore) and v5e/v6e.
    ('tpu v4', {'bfloat16': 275.0, 'float32': 275.0}),
    ('tpu v5 lite', {'bfloat16': 197.0, 'float32': 197.0}),  # v5e.
    ('tpu v5e', {'bfloat16': 197.0, 'float32': 197.0}),
    ('tpu v5', {'bfloat16': 459.0, 'float32': 459.0}),  # v5p ('TPU v5', 'TPU v5p').
    ('tpu v6', {'bfloat16': 918.0, 'float32': 918.0}),  # v6e, Trillium.
)

HOST_INPUTS = ('none', 'uint8', 'float32')
# jax.monitoring event recorded once per XLA compilation (jax/_src/dispatch.py).
_BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


def peak_tflops_for(device_kind: str, dtype: str) -> float | None:
  """Dense peak TFLOP/s of one device of `device_kind` for compute `dtype`.

  Args:
    device_kind: `jax.Device.device_kind`, e.g. 'NVIDIA H100 80GB HBM3'.
    dtype: 'float32', 'bfloat16' or 'float16'.

  Returns:
    The peak from the table above, or None for devices it does not know (CPUs).
  """
  kind = device_kind.lower()
  key = 'float32' if dtype == 'float32' else 'bfloat16'
  for pattern, peaks in _PEAK_TFLOPS:
    if pattern in kind:
      return peaks[key]
  return None


def model_flop_utilization(flops_per_step: float, step_time_s: float,
                           peak_tflops: float | None, num_devices: int) -> float | None:
  """Achieved FLOP/s over the devices' combined peak; None without a peak."""
  if not peak_tflops or step_time_s <= 0:
    return None
  return flops_per_step / step_time_s / (peak_tflops * 1e12 * num_devices)


def compiled_flops(compiled: Any) -> float:
  """FLOPs per device that XLA's cost analysis reports for a compiled step.

  For a jit of shard_map the analysis covers one device's program.
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per computation.
    analysis = analysis[0]
  return float(analysis.get('flops', 0.0)) if analysis else 0.0


def host_batch(exp: train.Experiment, image_dtype: str = 'uint8',
               seed: int = 0) -> dict[str, np.ndarray]:
  """This process's share of one random global batch, on the host."""
  layout = parallel.batch_layout(exp.run.data.batch_size)
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (layout.per_process, *exp.meta.image_shape),
                        dtype=np.uint8)
  labels = rng.integers(0, exp.num_classes, (layout.per_process,), dtype=np.int32)
  return {'image': images.astype(image_dtype), 'label': labels}


def batches(exp: train.Experiment, host_input: str, prefetch: int) -> Iterator[Any]:
  """Batches for the timed loop.

  Args:
    exp: the experiment.
    host_input: 'none': one batch put on the devices once and reused (no
      input work in the loop); 'uint8' / 'float32': every step transfers a
      host batch of that image dtype to the devices, to measure the transfer.
    prefetch: with a host input, batches kept in flight ahead of the step
      (0: transferred synchronously in the loop).
  """
  if host_input == 'none':
    return itertools.repeat(parallel.shard_batch(host_batch(exp), exp.mesh))
  # Two alternating host buffers: no batch is transferred twice in a row.
  host = itertools.cycle([host_batch(exp, host_input, seed) for seed in (0, 1)])
  if prefetch > 0:
    return placement.stream(host, exp.mesh, prefetch)
  return map(lambda b: parallel.shard_batch(b, exp.mesh), host)


def transfer_ms(exp: train.Experiment, image_dtype: str, repeats: int = 5) -> float:
  """Median milliseconds to put one host batch of `image_dtype` images on the devices."""
  batch = host_batch(exp, image_dtype)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(parallel.shard_batch(batch, exp.mesh))
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


@contextlib.contextmanager
def count_compiles() -> Iterator[list[str]]:
  """Yields a list that gets one entry per XLA compilation inside the block."""
  compiles = []

  def listener(name, seconds, **kwargs):
    del seconds, kwargs
    if name == _BACKEND_COMPILE_EVENT:
      compiles.append(name)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def timed_steps(step_fn: Callable, state: Any, batch_iter: Iterator[Any],
                steps: int) -> tuple[Any, float]:
  """Runs `steps` steps; returns the state and the seconds they took.

  The host waits for the devices only before starting the clock and after the
  last step: steps are dispatched asynchronously, as in the training loop.
  """
  jax.block_until_ready(state)
  start = time.perf_counter()
  metrics = None
  for _ in range(steps):
    state, metrics = step_fn(state, next(batch_iter))
  jax.block_until_ready((state, metrics))
  return state, time.perf_counter() - start


def peak_memory_gb() -> float | None:
  """Peak bytes allocated on the first local device, where the backend says (GPU/TPU)."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    # Backends without allocator statistics (CPU) raise or return None.
    return None
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return stats['peak_bytes_in_use'] / 2**30


def max_rss_gb() -> float | None:
  """Peak resident memory of this process (on a CPU backend, device memory too)."""
  try:
    import resource  # pylint: disable=g-import-not-at-top
  except ImportError:  # Not on POSIX.
    return None
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (2**30 if sys.platform == 'darwin' else 2**20)  # bytes there, KiB on Linux.


def _round(x: float | None, digits: int = 6) -> float | None:
  return None if x is None else float(f'{x:.{digits}g}')


@dataclasses.dataclass(frozen=True)
class Timing:
  """What `measure` observed."""
  compile_s: float
  flops_per_device: float
  step_times_s: tuple[float, ...]  # Seconds per step, one per timed window.
  recompiles: int  # XLA compilations while stepping: 0 unless shapes or shardings drift.

  @property
  def step_time_s(self) -> float:
    return statistics.median(self.step_times_s)


def measure(exp: train.Experiment, *, steps: int, warmup: int, repeats: int,
            donate: bool, host_input: str, prefetch: int) -> Timing:
  """Compiles the train step (as training does), runs `warmup` steps, times windows."""
  start = time.perf_counter()
  # The executable training runs (ahead-of-time, memory checked); calling it
  # never compiles again.
  compiled = exp.compile_train_step(donate=donate)
  compile_s = time.perf_counter() - start
  flops = compiled_flops(compiled)
  args = exp.step_args()  # The teacher's variables, when distilling.
  step = (lambda state, batch: compiled(state, batch, *args)) if args else compiled
  state = exp.init_state()
  batch_iter = batches(exp, host_input, prefetch)
  first = next(batch_iter)
  logging.info('Compiled in %.1f s; %.4g FLOPs per device per step.', compile_s, flops)

  windows = []
  with count_compiles() as compiles:
    state, seconds = timed_steps(step, state, itertools.chain([first], batch_iter), warmup)
    logging.info('%d warmup steps in %.2f s.', warmup, seconds)
    for _ in range(repeats):
      state, seconds = timed_steps(step, state, batch_iter, steps)
      windows.append(seconds / steps)
      logging.info('%d steps: %.2f ms/step.', steps, 1000 * windows[-1])
  if compiles:
    logging.warning('The step compiled %d more time(s) after the first compile: '
                    'compile_s understates, and a timed window may include it.',
                    len(compiles))
  return Timing(compile_s=compile_s, flops_per_device=flops, step_times_s=tuple(windows),
                recompiles=len(compiles))


def result_row(exp: train.Experiment, timing: Timing, *,
               peak_tflops: float | None) -> dict[str, Any]:
  """The JSON-able result (see the module docstring) for a measured config."""
  dtype = exp.run.dtype
  devices = jax.local_devices()
  num_devices = len(devices)
  spec = exp.model.spec
  if peak_tflops is None:
    peak_tflops = peak_tflops_for(devices[0].device_kind, dtype)
  step_s = timing.step_time_s
  flops = timing.flops_per_device * num_devices
  batch_size = exp.run.data.batch_size
  return {
      'model': spec.label,
      'model_description': spec.describe(),
      'image_size': int(exp.meta.image_shape[0]),
      'batch_size': batch_size,
      'per_device_batch': batch_size // num_devices,
      'dtype': dtype,
      'images_per_sec': _round(batch_size / step_s),
      'step_time_ms': _round(1000 * step_s),
      'compile_s': _round(timing.compile_s, 4),
      'recompiles': timing.recompiles,
      'flops_per_step': flops,
      'tflops_per_sec': _round(flops / step_s / 1e12),
      'mfu': _round(model_flop_utilization(flops, step_s, peak_tflops, num_devices)),
      'peak_tflops': peak_tflops,
      'device': devices[0].device_kind,
      'platform': devices[0].platform,
      'num_devices': num_devices,
      'step_time_ms_windows': [_round(1000 * w) for w in timing.step_times_s],
      'peak_memory_gb': _round(peak_memory_gb(), 4),
      'max_rss_gb': _round(max_rss_gb(), 4),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'jax_version': jax.__version__,
      'jaxlib_version': _jaxlib_version(),
      'flax_version': flax.__version__,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }


def synthetic(config: Any) -> Any:
  """The config on synthetic data of its dataset's input shape (no data needed).

  Everything else stays: model, dtype, optimizer, batch, augmentation (data
  resident on the devices, as CIFAR's is in training, is cropped and flipped
  inside the step).
  """
  from resnet_jax import data  # pylint: disable=g-import-not-at-top
  (size, _, _), classes = data.input_shape(data.resolve(config))
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.dataset, config.image_size, config.num_classes = 'fake', size, classes
  return config


def run_benchmark(config: Any, *, steps: int = 20, warmup: int = 3, repeats: int = 1,
                  peak_tflops: float | None = None, donate: bool = True,
                  host_input: str = 'none', prefetch: int = 0,
                  estimate_steps: int = 0) -> dict[str, Any]:
  """Compiles and times the train step of `config`; returns the result row.

  Args:
    config: a run config (`config.batch_size` is the global batch).
    steps: timed steps per window.
    warmup: untimed steps after compiling (the first execution included).
    repeats: timed windows; the step time reported is their median.
    peak_tflops: peak TFLOP/s per device for the MFU; None: from the table.
    donate: donate the train state to the step (as training does).
    host_input: 'none', 'uint8' or 'float32' (see `batches`).
    prefetch: batches in flight for a host input.
    estimate_steps: when > 0, also report the time of this many steps.

  Returns:
    The JSON-able result row (see the module docstring).

  Raises:
    ConfigError: invalid config or benchmark settings.
  """
  if steps < 1 or warmup < 0 or repeats < 1:
    raise ConfigError(f'--steps={steps} and --repeats={repeats} must be >= 1 and '
                      f'--warmup={warmup} >= 0')
  if host_input not in HOST_INPUTS:
    raise ConfigError(f'--host_input={host_input!r}; valid: {", ".join(HOST_INPUTS)}')
  if prefetch < 0:
    raise ConfigError(f'--prefetch={prefetch} must be >= 0')
  exp = train.setup_experiment(specs.resolve(synthetic(config)))
  timing = measure(exp, steps=steps, warmup=warmup, repeats=repeats, donate=donate,
                   host_input=host_input, prefetch=prefetch)
  result = result_row(exp, timing, peak_tflops=peak_tflops)
  result.update(steps=steps, warmup=warmup, repeats=repeats, donate=donate,
                host_input=host_input, prefetch=prefetch)
  if host_input != 'none':
    # The transfer alone, blocked, with the devices idle: what a step must hide.
    result['h2d_ms_per_batch'] = _round(transfer_ms(exp, host_input), 4)
  if estimate_steps > 0:
    # Step time only: no compile, evaluation, checkpoints or input pipeline.
    result['estimate_steps'] = estimate_steps
    result['estimated_time_for_steps'] = _round(estimate_steps * timing.step_time_s, 5)
  # The GPU machine has no TensorFlow: nothing on this path may import it.
  result['tensorflow_imported'] = 'tensorflow' in sys.modules
  return result


def _jaxlib_version() -> str | None:
  import jaxlib  # pylint: disable=g-import-not-at-top
  return getattr(jaxlib, '__version__', None)


# --- Command line -------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The benchmark's flags; defined only when run as a program, so that
  importing the module (tests, notebooks) leaves absl's flag namespace alone."""
  config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/fake_data.py:model=r50.',
      lock_config=True)
  flags.mark_flags_as_required(['config'])
  flags.DEFINE_integer('steps', 20, 'Timed steps per window.')
  flags.DEFINE_integer('warmup', 3, 'Untimed steps after compiling.')
  flags.DEFINE_integer('repeats', 1, 'Timed windows; the median step time is reported.')
  flags.DEFINE_integer('batch_size', 0, 'Global batch size (0: config.batch_size).')
  flags.DEFINE_float('peak_tflops', 0.0,
                     'Peak TFLOP/s per device for the MFU (0: look up the device kind).')
  flags.DEFINE_boolean('donate', True, 'Donate the train state to the step.')
  flags.DEFINE_enum('host_input', 'none', HOST_INPUTS,
                    "'none': the batch stays on the devices; 'uint8'/'float32': "
                    'transfer a host batch of that dtype every step.')
  flags.DEFINE_integer('prefetch', 0, 'Batches in flight for --host_input (0: none).')
  flags.DEFINE_integer('estimate_steps', 0,
                       'Also report estimated_time_for_steps for this many steps.')
  flags.DEFINE_string('output', '', 'Append the JSON line to this file.')


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = FLAGS.config
  if FLAGS.batch_size:
    config.batch_size = FLAGS.batch_size
  result = run_benchmark(
      config, steps=FLAGS.steps, warmup=FLAGS.warmup, repeats=FLAGS.repeats,
      peak_tflops=FLAGS.peak_tflops or None, donate=FLAGS.donate,
      host_input=FLAGS.host_input, prefetch=FLAGS.prefetch,
      estimate_steps=FLAGS.estimate_steps)
  line = json.dumps(result)
  print(line, flush=True)
  if FLAGS.output:
    with open(FLAGS.output, 'a', encoding='utf-8') as f:
      f.write(line + '\n')
  return 0


if __name__ == '__main__':
  cli.run(main, define_flags)
