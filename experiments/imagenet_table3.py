r"""ImageNet: the paper's Table 3 grid (plain-34, ResNet-34 A/B/C, ResNet-50/101/152).

Needs the prepared 'imagenet2012' tfds dataset (see the README, "Offline datasets").
Points: plain34, r34-A, r34-B, r34-C, r50-B, r101-B, r152-B (each `-s{seed}`).

    python -m resnet_jax.sweep slurm experiments/imagenet_table3.py:data_dir=/data/tfds \
        --workdir=/scratch/table3 --sbatch=--gres=gpu:8 --sbatch=--time=48:00:00 > table3.sh
    sbatch table3.sh
    python -m resnet_jax.sweep report experiments/imagenet_table3.py:data_dir=/data/tfds \
        --workdir=/scratch/table3

Arguments (after ':', comma-separated):
  preset - paper (default): the paper's recipe as far as it is stated: batch
             256, SGD momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at
             epochs 30, 60, 90, 600k iterations (120 epochs), bottleneck stride
             on the first 1x1 ('v1', as in the paper), float32.
           standard: the project's configs/r34.py ... r152.py as they are
             (torchvision-style v1.5, Nesterov, batch 1024, cosine, 90
             epochs, bfloat16) with only the shortcut changed.
           smoke: 2 steps on synthetic 64x64 data: checks that all seven
             networks build and train; needs no dataset.
  seeds  - seeds per network (0..seeds-1); default 1.
  data_dir - tfds data directory holding imagenet2012 ('' = tfds default).
"""

from resnet_jax import configlib
from resnet_jax import sweep
from resnet_jax.errors import ConfigError

# He et al. 2015, Table 3: ImageNet validation error (%), 10-crop testing.
PAPER_TABLE3 = {
    'plain34': {'top1_err': 28.54, 'top5_err': 10.02},
    'r34-A': {'top1_err': 25.03, 'top5_err': 7.76},
    'r34-B': {'top1_err': 24.52, 'top5_err': 7.46},
    'r34-C': {'top1_err': 24.19, 'top5_err': 7.40},
    'r50-B': {'top1_err': 22.85, 'top5_err': 6.71},
    'r101-B': {'top1_err': 21.75, 'top5_err': 6.05},
    'r152-B': {'top1_err': 21.43, 'top5_err': 5.71},
}

NOTES = """\
- Paper: He et al. 2015, Table 3 (ImageNet val, 10-crop testing). Ours is evaluated
  on a single 224x224 centre crop, which typically costs 1-2 points of top-1 error.
- The paper divides the lr by 10 "when the error plateaus" over 60x10^4 iterations and
  trains with scale (shorter side 256-480) and colour augmentation; the `paper` preset
  uses fixed steps at epochs 30/60/90 and random-resized-crop augmentation.
- ResNet-50/101/152 use option B (projections where dimensions increase), as in the paper."""

PRESETS = {
    'paper': {
        'batch_size': 256,
        'optimizer': 'sgd',
        'learning_rate': 0.1,
        'momentum': 0.9,
        'weight_decay': 1e-4,
        'schedule': 'piecewise',
        'warmup_epochs': 0.0,
        'lr_boundaries_epochs': (30.0, 60.0, 90.0),
        'lr_decay_factor': 0.1,
        'num_train_steps': 600_000,
        'model.bottleneck_stride': 'v1',
        'dtype': 'float32',
        'checkpoint_every_steps': 5_000,
    },
    'standard': {},
    'smoke': {
        'dataset': 'fake',
        'augment': 'none',
        'image_size': 64,
        'num_classes': 1000,
        'batch_size': 8,
        'eval_batch_size': 8,
        'num_train_steps': 2,
        'warmup_epochs': 0.0,
        'num_eval_batches': 1,
        'log_every_steps': 1,
        'eval_every_steps': 2,
        'checkpoint_every_steps': 2,
        'dtype': 'float32',
    },
}

# (group, config file, shortcut): the rows of Table 3.
NETWORKS = (
    ('plain34', 'configs/r34.py', 'none'),
    ('r34-A', 'configs/r34.py', 'A'),
    ('r34-B', 'configs/r34.py', 'B'),
    ('r34-C', 'configs/r34.py', 'C'),
    ('r50-B', 'configs/r50.py', 'B'),
    ('r101-B', 'configs/r101.py', 'B'),
    ('r152-B', 'configs/r152.py', 'B'),
)
DEPTH = {'configs/r34.py': 34, 'configs/r50.py': 50, 'configs/r101.py': 101,
         'configs/r152.py': 152}


def get_sweep(arg=None) -> sweep.Sweep:
  args = configlib.parse_arg(arg, preset='paper', seeds=1, data_dir='')
  if args.preset not in PRESETS:
    raise ConfigError(
        f'unknown preset {args.preset!r}; valid presets: {", ".join(PRESETS)}')
  if args.seeds < 1:
    raise ConfigError(f'seeds={args.seeds} must be at least 1')
  fixed = dict(PRESETS[args.preset])
  if args.data_dir:
    fixed['data_dir'] = args.data_dir
  by_group = {group: (config, shortcut) for group, config, shortcut in NETWORKS}

  points = sweep.product(
      name='{network}-s{seed}', group='{network}',
      config=lambda network, **_: by_group[network][0],
      overrides=lambda network, seed: {
          'model.shortcut': by_group[network][1], 'seed': seed, **fixed},
      network=list(by_group), seed=range(args.seeds))
  for p in points:
    # Report by depth and shortcut, like the CIFAR grid.
    config, shortcut = by_group[p.tags['network']]
    p.tags = {'depth': DEPTH[config], 'shortcut': shortcut, 'seed': p.tags['seed']}
  return sweep.Sweep(
      points=points, paper_results=PAPER_TABLE3, name=f'imagenet_table3-{args.preset}',
      description=('ImageNet validation error of plain-34, ResNet-34 with shortcut '
                   'options A/B/C, and ResNet-50/101/152; He et al. 2015, Table 3.'),
      notes=NOTES, x='depth', series='shortcut', average_over='seed',
      metrics=('top1', 'top5'),
      series_labels={'none': 'plain'})
