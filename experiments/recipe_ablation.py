r"""CIFAR-10: the modern recipes' parts one at a time on the quickstart recipe, and all together.

The network and budget of the laptop quickstart (configs/cifar10.py, recipe
quick: ResNet-20 option A, Adam 2e-3, cosine with 100 warmup steps, batch 128)
cut to `steps` steps, then each part of the ResNet strikes back / Bag of Tricks /
ResNet-RS recipes switched on alone, and all of them at once:

    python -m resnet_jax.sweep run experiments/recipe_ablation.py --workdir=runs/recipe_ablation
    python -m resnet_jax.sweep report experiments/recipe_ablation.py \
        --workdir=runs/recipe_ablation --out=experiments/results/recipe_ablation

Arguments (after ':'): steps (default 900, about 2.3 epochs; the sweep's wall
time and results are in experiments/README.md), evals (default 3), seeds (default 1),
dataset ('auto': the CIFAR-10 JPEG copy beside the project, else tfds cifar10).
The cost of each part (step time, host images/s per core) is measured apart
by experiments/recipe_costs.py.
"""

from resnet_jax import configlib
from resnet_jax import sweep
from resnet_jax.errors import ConfigError

depth_shortcut = configlib.sibling(__file__, 'depth_shortcut')

# Each part as the recipes set it (ResNet strikes back A2 / Bag of Tricks /
# ResNet-RS values, scaled to a CIFAR-sized run where they are lengths).
PARTS = {
    'baseline': {},
    'label_smoothing': {'label_smoothing': 0.1},
    'mixup': {'mixup_alpha': 0.2},
    'cutmix': {'cutmix_alpha': 1.0},
    'randaugment': {'rand_augment': 'rand-m7-mstd0.5-inc1'},
    'trivialaugment': {'trivial_augment': True},
    'random_erasing': {'random_erasing': 0.25},
    'repeated_aug': {'repeated_augmentation': 2},
    'ema': {'ema_decay': 0.999, 'ema_warmup': True},
    'drop_path': {'model.drop_path_rate': 0.05},
    'bce': {'loss': 'bce', 'bce_target_threshold': 0.2},
    'lamb': {'optimizer': 'lamb', 'learning_rate': 5e-3, 'weight_decay': 0.02},
}
# Everything at once (TrivialAugment is RandAugment's alternative: left out).
PARTS['all'] = {k: v for name, part in PARTS.items() if name != 'trivialaugment'
                for k, v in part.items()}

NOTES = """\
- One seed per part and a short budget: differences under about one point are within
  what a seed changes on this copy.
- Regularisers (Mixup, CutMix, RandAugment, random erasing, drop path, label
  smoothing) trade training fit for generalisation and pay off over hundreds of
  epochs; at ~2 epochs most are expected to cost accuracy. ResNet strikes back
  trains 100 to 600 ImageNet epochs.
- The EMA is evaluated beside the raw weights (`eval_ema_top1` in each point's
  metrics.jsonl); the table shows the raw weights.
"""


def get_sweep(arg=None) -> sweep.Sweep:
  args = configlib.parse_arg(arg, steps=900, evals=3, seeds=1, dataset='auto')
  if args.steps < 200 or not 1 <= args.evals <= args.steps:
    raise ConfigError(f'steps={args.steps} must be >= 200 (the warmup is 100) and '
                      f'evals={args.evals} in 1..steps')
  every = args.steps // args.evals
  fixed = {'dataset': depth_shortcut.dataset_value(args.dataset),
           'num_train_steps': args.steps, 'eval_every_steps': every,
           'checkpoint_every_steps': every, 'log_every_steps': 50}
  points = sweep.product(
      name='{part}-s{seed}', group='{part}', config='configs/cifar10.py:recipe=quick',
      overrides=lambda part, seed: {**fixed, **PARTS[part], 'seed': seed},
      part=list(PARTS), seed=range(args.seeds))
  return sweep.Sweep(
      points=points, name=f'recipe_ablation-{args.steps}steps',
      description=(f'CIFAR-10 (JPEG copy): ResNet-20, the quick recipe cut to {args.steps} '
                   'steps, with each part of the modern recipes alone and all together.'),
      notes=NOTES, average_over='seed')
