r"""Train-step time of two commits of this repository, interleaved in one run.

    python benchmarks/ab_commits.py --base=cfa94de --head=HEAD \
        --config=configs/fake_data.py:model=cifar20 --devices=1,8 --windows=6 --steps=3

Each commit is checked out into a temporary worktree; for each device count,
one worker process per commit builds that commit's own train step (its
benchmark module's public functions), compiles it and waits. The driver then
asks the workers for timed windows in turn (base, head, base, head, ...), so
load from other processes hits both alike, and prints one JSON line per
device count: the median step time of each and the median of the per-round
ratios head / base (< 1: head is faster).

Needs nothing beyond the project's venv; `--overrides` are config overrides as
JSON ({"model.depth": 56}). XLA_FLAGS of the caller are passed through, plus
the device-count flag.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside a worker, with the commit's checkout first on sys.path: builds the
# step the commit's own benchmark times, then answers 'STEPS' lines with seconds.
_WORKER = r'''
import json, sys
# The editable install's finder would serve this checkout's modules that the
# commit lacks (e.g. specs.py before it existed): only the commit's files count.
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, '__module__', '').startswith('__editable__')]
from resnet_jax import benchmark as b, configlib, train
config = configlib.load(sys.argv[1], json.loads(sys.argv[2]))
if hasattr(b, 'synthetic'):  # After the mesh migration: jit(shard_map), AOT.
  config = b.synthetic(config)
  try:  # After the config was resolved into specs.
    from resnet_jax import specs
    config = specs.resolve(config)
  except ImportError:
    pass
  exp = train.setup_experiment(config)
  step = exp.compile_train_step()
  state = exp.init_state()
else:  # Before: the pmapped step.
  exp = train.setup_experiment(config)
  step = b.pmap_train_step(exp, True)
  state = b.initial_state(exp)
batches = b.batches(exp, 'none', 0)
state, _ = b.timed_steps(step, state, batches, 2)  # Compile (if lazy) and warm up.
print('READY', flush=True)
for line in sys.stdin:
  state, seconds = b.timed_steps(step, state, batches, int(line))
  print(seconds, flush=True)
'''


def _worktree(commit: str, where: str) -> str:
  path = os.path.join(where, commit.replace('/', '_'))
  subprocess.run(['git', '-C', REPO, 'worktree', 'add', '--detach', '-f', path, commit],
                 check=True, capture_output=True)
  return path


def _start(tree: str, config: str, overrides: str, devices: int) -> subprocess.Popen:
  flags = os.environ.get('XLA_FLAGS', '')
  env = dict(os.environ, PYTHONPATH=tree, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count={devices}'.strip())
  proc = subprocess.Popen([sys.executable, '-c', _WORKER, os.path.join(tree, config.split(':')[0])
                           + (':' + config.split(':', 1)[1] if ':' in config else ''),
                           overrides], cwd=tree, env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
  line = proc.stdout.readline()
  if line.strip() != 'READY':
    raise RuntimeError(f'worker for {tree} failed to start (got {line!r})')
  return proc


def _window(proc: subprocess.Popen, steps: int) -> float:
  proc.stdin.write(f'{steps}\n')
  proc.stdin.flush()
  return float(proc.stdout.readline()) / steps


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--base', required=True)
  parser.add_argument('--head', default='HEAD')
  parser.add_argument('--config', default='configs/fake_data.py:model=cifar20')
  parser.add_argument('--overrides', default='{}', help='config overrides as JSON')
  parser.add_argument('--devices', default='1,8')
  parser.add_argument('--windows', type=int, default=6)
  parser.add_argument('--steps', type=int, default=3)
  args = parser.parse_args()
  where = tempfile.mkdtemp(prefix='ab_commits_')
  try:
    trees = {name: _worktree(commit, where)
             for name, commit in (('base', args.base), ('head', args.head))}
    for devices in map(int, args.devices.split(',')):
      workers = {name: _start(tree, args.config, args.overrides, devices)
                 for name, tree in trees.items()}
      times = {name: [] for name in workers}
      for _ in range(args.windows):
        for name, proc in workers.items():
          times[name].append(_window(proc, args.steps))
      for proc in workers.values():
        proc.stdin.close()
        proc.wait(timeout=60)
      ratios = [h / b for h, b in zip(times['head'], times['base'])]
      print(json.dumps({
          'config': args.config, 'overrides': json.loads(args.overrides),
          'devices': devices, 'base': args.base, 'head': args.head,
          'base_step_ms': round(1000 * statistics.median(times['base']), 2),
          'head_step_ms': round(1000 * statistics.median(times['head']), 2),
          'ratio_head_over_base': round(statistics.median(ratios), 4),
          'ratios': [round(r, 3) for r in ratios],
          'windows': args.windows, 'steps_per_window': args.steps}), flush=True)
  finally:
    for tree in os.listdir(where):
      subprocess.run(['git', '-C', REPO, 'worktree', 'remove', '--force',
                      os.path.join(where, tree)], capture_output=True)
    shutil.rmtree(where, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
