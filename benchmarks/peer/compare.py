r"""resnet_jax against PyTorch on the same CPU: train-step throughput, interleaved.

    benchmarks/peer/setup.sh          # once: benchmarks/peer/.venv (project + torch)
    benchmarks/peer/.venv/bin/python benchmarks/peer/compare.py \
        --models=cifar20,cifar56,cifar110,r50 --dtypes=float32,bfloat16

Both sides train the same network on the same batch with the same optimizer
(Adam, lr 1e-3, plain softmax cross-entropy, synthetic data):

  ours    the real resnet_jax train step, as `resnet_jax.train` runs it (see
          `ours_train_step`), with the program's own backend options
          (`resnet_jax.xla_options`); `--config.dtype=bfloat16` for bf16.
  torch   the same network in PyTorch (`torch_models.py`), channels_last; a
          step is zero_grad, forward, F.cross_entropy, backward, Adam step;
          bf16 is `torch.autocast('cpu', torch.bfloat16)` (f32 master weights,
          as ours).

Models: `cifarD` (CIFAR ResNet-D, option A, batch 128, 32x32, 10 classes),
`cifarDC` / `cifarDB` / `cifarDnone` (other shortcuts), `r50` (ImageNet ResNet-50
v1.5 at 224x224, 1000 classes, batch `--r50_batch`).

Each side runs in its own worker process (so neither library's thread pools or
allocator touch the other's), set up and warmed up first; then the parent runs
timed windows in rotation, one worker at a time, for `--rounds` rounds, so a
change in the machine's load hits every side alike. A window is `--window_s`
seconds of steps (the step count is fixed per worker from its warmup). Ratios
are medians over rounds of the per-round ratio of images/s.

`--ours_variant=NAME:key=value;key=value` adds a resnet_jax worker with config
overrides (e.g. `nofast:cpu_fast_paths=False`), timed in the same rotation; a
key starting with `@` sets an environment variable of that worker instead (e.g.
`vec512:@XLA_FLAGS=--xla_cpu_prefer_vector_width=512`);
`--interleave=all` puts every model and dtype in one rotation (e.g. ResNet-110
A against C: `--models=cifar110,cifar110C --torch=false --interleave=all
--baseline_model=cifar110C`).

Prints one JSON line per model and dtype, then a summary line; logs go to stderr.
"""

import ast
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list('models', ['cifar20', 'cifar56'], 'cifarD[A|B|C|none] or r50.')
flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'float32 and/or bfloat16.')
flags.DEFINE_integer('r50_batch', 8, 'Batch size of ResNet-50 (CIFAR models use 128).')
flags.DEFINE_integer('cifar_batch', 128, 'Batch size of the CIFAR models.')
flags.DEFINE_integer('rounds', 5, 'Timed windows per worker.')
flags.DEFINE_float('window_s', 4.0, 'Target seconds per timed window.')
flags.DEFINE_integer('warmup', 3, 'Untimed steps per worker after compiling.')
flags.DEFINE_bool('torch', True, 'Include the PyTorch worker.')
flags.DEFINE_multi_string('ours_variant', [],
                          'Extra resnet_jax workers: NAME:key=value;key=value (config '
                          'overrides, as --config.key=value; @VAR=value sets an '
                          'environment variable of that worker).')
flags.DEFINE_enum('interleave', 'pair', ['pair', 'all'],
                  "'pair': one rotation per model and dtype; 'all': one rotation "
                  'over everything.')
flags.DEFINE_string('baseline_model', '',
                    "With --interleave=all: also report each model's step time over "
                    "this model's (same side and dtype), e.g. cifar110C.")
flags.DEFINE_string('worker', '', 'Internal: run as a worker for this JSON spec.')
flags.DEFINE_string('output', '', 'Also append the JSON lines to this file.')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE_CONFIG = os.path.join(REPO, 'configs', 'fake_data.py')
SHORTCUTS = ('A', 'B', 'C', 'none')


def parse_model(name: str, cifar_batch: int, r50_batch: int) -> dict[str, Any]:
  """'cifar56' / 'cifar110C' / 'r50' -> what both workers build."""
  if name == 'r50':
    return {'name': name, 'kind': 'resnet50', 'depth': 50, 'shortcut': 'B',
            'batch': r50_batch, 'image': 224, 'classes': 1000}
  if name.startswith('cifar'):
    rest = name[len('cifar'):]
    digits = len(rest) - len(rest.lstrip('0123456789'))
    depth, shortcut = rest[:digits], rest[digits:] or 'A'
    if depth and (int(depth) - 2) % 6 == 0 and int(depth) >= 8 and shortcut in SHORTCUTS:
      return {'name': name, 'kind': 'cifar', 'depth': int(depth), 'shortcut': shortcut,
              'batch': cifar_batch, 'image': 32, 'classes': 10}
  raise app.UsageError(f'--models: {name!r} is not cifarD[A|B|C|none] (D = 6n+2) or r50')


# --- resnet_jax side ------------------------------------------------------------


def ours_config(model: dict[str, Any], dtype: str, overrides: dict[str, str]):
  """The resnet_jax config of a peer-benchmark model: fake data, Adam, constant lr."""
  from resnet_jax import configlib  # pylint: disable=g-import-not-at-top
  if model['kind'] == 'resnet50':
    config = configlib.load(FAKE_CONFIG + ':model=r50')
    # fake_data's r50 carries the ImageNet recipe (Nesterov, decay); the peer is Adam.
    for key, value in {'optimizer': 'adam', 'learning_rate': 1e-3, 'momentum': 0.9,
                       'weight_decay': 0.0, 'schedule': 'constant'}.items():
      configlib.apply_override(config, key, value)
  else:
    config = configlib.load(FAKE_CONFIG + ':model=cifar20', {
        'model.depth': model['depth'], 'model.shortcut': model['shortcut']})
  configlib.apply_override(config, 'batch_size', model['batch'])
  configlib.apply_override(config, 'dtype', dtype)
  for key, value in overrides.items():
    configlib.apply_override(config, key, value)
  return config


def ours_train_step(config):
  """(step_fn, state, batch_iter) exactly as training runs the train step.

  The one place that knows resnet_jax's training internals: re-point it when
  they move. step_fn(state, batch) -> (state, metrics), state donated; batch_iter
  yields device-resident synthetic batches.
  """
  from resnet_jax import benchmark  # pylint: disable=g-import-not-at-top
  from resnet_jax import train  # pylint: disable=g-import-not-at-top
  try:
    from resnet_jax import specs  # pylint: disable=g-import-not-at-top
    exp = train.setup_experiment(specs.resolve(config))
  except ImportError:  # Before the config was resolved into specs.
    try:
      from resnet_jax import validation  # pylint: disable=g-import-not-at-top
      validation.validate(config)
    except ImportError:  # The pmap trainer checks inside setup_experiment.
      pass
    exp = train.setup_experiment(config)
  if hasattr(exp, 'compile_train_step'):  # jit(shard_map) trainer.
    step_fn, state = exp.compile_train_step(donate=True), exp.init_state()
  else:  # pmap trainer.
    step_fn, state = benchmark.pmap_train_step(exp, True), benchmark.initial_state(exp)
  return step_fn, state, benchmark.batches(exp, 'none', 0)


def ours_worker(spec: dict[str, Any]):
  """Returns run(steps) -> seconds for resnet_jax."""
  import jax  # pylint: disable=g-import-not-at-top
  config = ours_config(spec['model'], spec['dtype'], spec.get('overrides', {}))
  step_fn, state, batch_iter = ours_train_step(config)
  holder = [state]

  def run(steps: int) -> float:
    state = holder[0]
    jax.block_until_ready(state)
    start = time.perf_counter()
    metrics = None
    for _ in range(steps):
      state, metrics = step_fn(state, next(batch_iter))
    jax.block_until_ready((state, metrics))
    holder[0] = state
    return time.perf_counter() - start

  info = {'xla_flags': os.environ.get('XLA_FLAGS', ''), 'jax_version': jax.__version__,
          'device': jax.devices()[0].device_kind}
  return run, info


# --- PyTorch side ---------------------------------------------------------------


def torch_worker(spec: dict[str, Any]):
  """Returns run(steps) -> seconds for PyTorch."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_models  # pylint: disable=g-import-not-at-top

  m = spec['model']
  torch.manual_seed(0)
  net = torch_models.build(m['kind'], m['depth'], m['shortcut'], m['classes'])
  net = net.to(memory_format=torch.channels_last).train()
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  x = torch.randn(m['batch'], 3, m['image'], m['image']).contiguous(
      memory_format=torch.channels_last)
  y = torch.randint(0, m['classes'], (m['batch'],))
  bf16 = spec['dtype'] == 'bfloat16'

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      loss = F.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    return loss

  def run(steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      loss = step()
    loss.item()  # CPU torch is synchronous; this only keeps the loss alive.
    return time.perf_counter() - start

  info = {'torch_version': torch.__version__, 'torch_threads': torch.get_num_threads()}
  return run, info


def worker_main(spec: dict[str, Any]) -> None:
  """Set up, warm up, then answer 'steps' lines with JSON {seconds} on stdout."""
  out = sys.stdout
  sys.stdout = sys.stderr  # Libraries' prints must not corrupt the protocol.
  start = time.perf_counter()
  run, info = (torch_worker if spec['side'] == 'torch' else ours_worker)(spec)
  warm = [run(1) for _ in range(max(1, spec['warmup']))]
  info.update(setup_s=time.perf_counter() - start, warmup_step_s=warm[-1])
  out.write(json.dumps(info) + '\n')
  out.flush()
  for line in sys.stdin:
    steps = int(line)
    if steps <= 0:
      break
    cpu = time.process_time()
    seconds = run(steps)
    out.write(json.dumps({'seconds': seconds, 'cpu_seconds': time.process_time() - cpu})
              + '\n')
    out.flush()


# --- Parent: rotation and report ------------------------------------------------


class Worker:
  """A worker process: `side` ('torch' or a resnet_jax variant name) for one model/dtype."""

  def __init__(self, side: str, model: dict[str, Any], dtype: str,
               overrides: dict[str, Any]):
    self.side, self.model, self.dtype = side, model, dtype
    env_vars = {k[1:]: str(v) for k, v in overrides.items() if k.startswith('@')}
    overrides = {k: v for k, v in overrides.items() if not k.startswith('@')}
    spec = {'side': 'torch' if side == 'torch' else 'ours', 'model': model,
            'dtype': dtype, 'overrides': overrides, 'warmup': FLAGS.warmup}
    env = dict(os.environ, **env_vars, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), '--worker=' + json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    self.info = None
    self.steps = 1
    self.step_s: list[float] = []
    self.cpu_step_s: list[float] = []

  def ready(self) -> None:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f'worker {self.side} {self.model["name"]} {self.dtype} failed '
                         f'(exit {self.proc.wait()}); see its log above')
    self.info = json.loads(line)
    self.steps = max(1, round(FLAGS.window_s / max(self.info['warmup_step_s'], 1e-3)))

  def window(self) -> float:
    self.proc.stdin.write(f'{self.steps}\n')
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f'worker {self.side} {self.model["name"]} {self.dtype} died')
    answer = json.loads(line)
    seconds = answer['seconds'] / self.steps
    self.step_s.append(seconds)
    self.cpu_step_s.append(answer['cpu_seconds'] / self.steps)
    return seconds

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write('0\n')
        self.proc.stdin.close()
      except BrokenPipeError:
        pass
      self.proc.wait(timeout=60)


def _literal(text: str) -> Any:
  """'False' / 'true' / '3' / '1e-3' / 'A' -> bool, int, float or str."""
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_variants(values: list[str]) -> list[tuple[str, dict[str, str]]]:
  variants = [('ours', {})]
  for v in values:
    name, _, rest = v.partition(':')
    overrides = {}
    for item in filter(None, rest.split(';')):
      key, sep, value = item.partition('=')
      if not sep:
        raise app.UsageError(f'--ours_variant={v!r}: {item!r} is not key=value')
      key, value = key.strip(), value.strip()
      overrides[key] = value if key.startswith('@') else _literal(value)
    if not name or name in ('ours', 'torch') or name in dict(variants):
      raise app.UsageError(f'--ours_variant={v!r}: give it a new NAME before the colon')
    variants.append((name, overrides))
  return variants


def rotate(workers: list[Worker]) -> None:
  """Sets up every worker (one at a time), then runs the timed rounds."""
  for w in workers:
    w.ready()
    print(f'ready: {w.side} {w.model["name"]} {w.dtype}: {w.steps} steps per window '
          f'(setup {w.info["setup_s"]:.1f} s)', file=sys.stderr, flush=True)
  for r in range(FLAGS.rounds):
    for w in workers:
      s = w.window()
      print(f'round {r + 1}: {w.side:>8} {w.model["name"]:>10} {w.dtype:>8} '
            f'{1000 * s:9.1f} ms/step', file=sys.stderr, flush=True)


def _ratio(num: list[float], den: list[float]) -> float:
  """Median over rounds of den/num step time: num's images/s over den's."""
  return statistics.median(d / n for n, d in zip(num, den))


def report(workers: list[Worker]) -> list[dict[str, Any]]:
  rows = []
  groups: dict[tuple[str, str], dict[str, Worker]] = {}
  for w in workers:
    groups.setdefault((w.model['name'], w.dtype), {})[w.side] = w
  for (name, dtype), sides in groups.items():
    any_w = next(iter(sides.values()))
    batch = any_w.model['batch']
    row = {'model': name, 'dtype': dtype, 'batch': batch}
    for side, w in sides.items():
      row[f'{side}_images_per_sec'] = round(batch / statistics.median(w.step_s), 2)
      row[f'{side}_step_ms_windows'] = [round(1000 * s, 1) for s in w.step_s]
      # Process CPU seconds per step (all threads): less sensitive to other
      # processes' load than wall time, but it counts spinning threads too.
      row[f'{side}_cpu_ms_per_step'] = round(1000 * statistics.median(w.cpu_step_s), 1)
    if 'torch' in sides:
      for side, w in sides.items():
        if side != 'torch':
          key = 'ratio' if side == 'ours' else f'ratio_{side}'
          row[key] = round(_ratio(w.step_s, sides['torch'].step_s), 3)
    for side, w in sides.items():
      if side not in ('ours', 'torch') and 'ours' in sides:
        row[f'{side}_vs_ours'] = round(_ratio(w.step_s, sides['ours'].step_s), 3)
        row[f'{side}_vs_ours_cpu_time'] = round(
            _ratio(w.cpu_step_s, sides['ours'].cpu_step_s), 3)
    base = groups.get((FLAGS.baseline_model, dtype), {})
    if base and name != FLAGS.baseline_model:
      for side, w in sides.items():
        if side in base:  # Step time over the baseline's, per round: > 1 is slower.
          row[f'{side}_step_time_vs_{FLAGS.baseline_model}'] = round(
              _ratio(base[side].step_s, w.step_s), 3)
    row['info'] = {side: w.info for side, w in sides.items()}
    rows.append(row)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.worker:
    worker_main(json.loads(FLAGS.worker))
    return
  models = [parse_model(m, FLAGS.cifar_batch, FLAGS.r50_batch) for m in FLAGS.models]
  for d in FLAGS.dtypes:
    if d not in ('float32', 'bfloat16'):
      raise app.UsageError(f'--dtypes: {d!r}; valid: float32, bfloat16')
  variants = parse_variants(FLAGS.ours_variant)
  sides = ([('torch', {})] if FLAGS.torch else []) + variants
  plan = [(m, d) for m in models for d in FLAGS.dtypes]
  groups = [plan] if FLAGS.interleave == 'all' else [[p] for p in plan]
  rows = []
  for group in groups:
    workers = []
    try:
      for m, d in group:
        workers += [Worker(side, m, d, ov) for side, ov in sides]
      rotate(workers)
    finally:
      for w in workers:
        w.close()
    for row in report(workers):
      rows.append(row)
      line = json.dumps(row)
      print(line, flush=True)
      if FLAGS.output:
        with open(FLAGS.output, 'a', encoding='utf-8') as f:
          f.write(line + '\n')
  # One line that reads at a glance: ratio per model and dtype.
  summary = {f'{r["model"]}/{r["dtype"]}': r.get('ratio') for r in rows}
  print(json.dumps({'summary_ratio_ours_over_torch': summary,
                    'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                    'cpu_count': os.cpu_count(),
                    'load_avg_1m_end': os.getloadavg()[0]}), flush=True)


if __name__ == '__main__':
  app.run(main)
