r"""What each part of the modern recipes costs: train-step time and host images/s per core.

    python experiments/recipe_costs.py [--rounds=5 --steps=10] \
        [--out=experiments/results/recipe_ablation/costs.md]

Step time: every part of experiments/recipe_ablation.py is compiled in this
one process on synthetic data of the CIFAR input shape (the step training
runs, as `resnet_jax.benchmark` times it), then timed in windows of `steps`
steps, the parts taking turns for `rounds` rounds (so a busier machine slows
them alike); the median window is reported, and its ratio to the baseline's.
Host cost: the per-example transform each host part adds (resnet_jax.data.
transforms.Transform on the CIFAR-10 JPEG copy's decoded images, or random
32x32 images without it), one core, images/s.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from resnet_jax import benchmark  # pylint: disable=wrong-import-position
from resnet_jax import configlib  # pylint: disable=wrong-import-position
from resnet_jax import specs  # pylint: disable=wrong-import-position
from resnet_jax import train  # pylint: disable=wrong-import-position
from resnet_jax.data import transforms  # pylint: disable=wrong-import-position

ablation = configlib.sibling(__file__, 'recipe_ablation')
HOST_PARTS = ('randaugment', 'trivialaugment', 'random_erasing')


def step_times(rounds: int, steps: int) -> dict[str, float]:
  runs = {}
  for part, overrides in ablation.PARTS.items():
    config = configlib.load(os.path.join(REPO, 'configs/cifar10.py:recipe=quick'), {
        k: v for k, v in overrides.items() if k != 'teacher'})
    exp = train.setup_experiment(specs.resolve(benchmark.synthetic(config)))
    compiled = exp.compile_train_step()
    runs[part] = [compiled, exp.init_state(), benchmark.batches(exp, 'none', 0), []]
    runs[part][1], _ = benchmark.timed_steps(compiled, runs[part][1], runs[part][2], 2)
    print(f'compiled {part}', file=sys.stderr, flush=True)
  for _ in range(rounds):
    for part, run in runs.items():
      run[1], seconds = benchmark.timed_steps(run[0], run[1], run[2], steps)
      run[3].append(seconds / steps)
  return {part: statistics.median(run[3]) for part, run in runs.items()}


def host_rates(images: np.ndarray, n: int = 2000) -> dict[str, float]:
  rates = {}
  for part in ('baseline',) + HOST_PARTS:
    overrides = ablation.PARTS[part]
    transform = transforms.Transform(
        'cifar', 32, rand_augment=overrides.get('rand_augment', ''),
        trivial_augment=overrides.get('trivial_augment', False),
        random_erasing=overrides.get('random_erasing', 0.0),
        mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(n):
      transform((images[i % len(images)], 0), rng)
    rates[part] = n / (time.perf_counter() - start)
  return rates


def cifar_images() -> np.ndarray:
  copy = os.path.join(REPO, '..', 'shared', 'data', 'cifar10-jpeg-q75.tar.gz')
  if not os.path.exists(copy):
    return np.random.default_rng(0).integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
  from resnet_jax import data  # pylint: disable=g-import-not-at-top
  config = configlib.load(os.path.join(REPO, 'configs/cifar10.py'),
                          {'dataset': f'folder:{os.path.abspath(copy)}'})
  return data.open_input(data.resolve(config)).dataset.train.arrays()[0][:2000]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  rates = host_rates(cifar_images())
  times = step_times(args.rounds, args.steps)
  base = times['baseline']
  lines = ['# What each recipe part costs (experiments/recipe_costs.py)', '',
           f'Run: `{" ".join(sys.argv)}` ({time.strftime("%Y-%m-%d")}; {os.cpu_count()} '
           'CPU cores). Step: ResNet-20, batch 128, 32x32, synthetic data, median of '
           f'{args.rounds} interleaved windows of {args.steps} steps. Host: the per-example '
           'transform on one core (CIFAR-10 JPEG copy images).', '',
           '| part | step ms | / baseline | host images/s per core |', '|---|---|---|---|']
  for part, seconds in times.items():
    host = f'{rates[part]:,.0f}' if part in rates else ''
    lines.append(f'| {part} | {1000 * seconds:.1f} | {seconds / base:.3f} | {host} |')
  text = '\n'.join(lines) + '\n'
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w', encoding='utf-8') as f:
      f.write(text)


if __name__ == '__main__':
  main()
