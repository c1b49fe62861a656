r"""CIFAR-10: depth x shortcut ablation (He et al. 2015, section 4.2: Table 6, Fig. 6).

Grid: depth {20, 32, 44, 56, 110} x shortcut {A, B, C, none} x seeds; 'none'
is the plain network of the same depth. Points are named `d{depth}-{shortcut}-s{seed}`.

    python -m resnet_jax.sweep run experiments/depth_shortcut.py:preset=paper,seeds=5 \
        --workdir=runs/depth_shortcut
    python -m resnet_jax.sweep report experiments/depth_shortcut.py:preset=paper,seeds=5 \
        --workdir=runs/depth_shortcut

Arguments (after ':', comma-separated):
  preset - paper (default): the paper's recipe, configs/cifar10.py recipe=paper
             (64k steps, batch 128, SGD 0.9, wd 1e-4, lr 0.1 / 10 at 32k and 48k,
             45k/5k split; ResNet-110 warmed up, see NOTES).
           short: the same recipe on a 10x shorter schedule (6.4k steps, about
             18 epochs, data kept on the accelerator): meant for one GPU in
             about an hour for the grid (an estimate, not yet measured).
           cpu: the recipe cut to `steps` steps (lr / 10 at steps/2 and 3 steps/4),
             `evals` evaluations on 2,000 test images, data kept on the device:
             a few points on a 2-core CPU (the Fig. 6 comparison).
           smoke: 50 steps of batch 64 (10 warmup), eval on 1,000 test images:
             the whole grid (20 points) on a 2-core CPU in about half an hour
             when the CPU is not shared. Checks the pipeline end to end; its
             errors say nothing about the paper.
  seeds  - seeds per configuration (0..seeds-1); default 1.
  steps, evals - the cpu preset's length (default 300) and number of evaluations
             (default 3, evenly spaced; the last at the end).
  warmup - linear lr warmup in steps for every point (default -1: the preset's,
             which is the recipe's: none, 400 steps for ResNet-110). At lr 0.1
             from step 0 the deeper nets first blow up, then sit at chance for a
             while (also in PyTorch from the same weights: experiments/README.md);
             short presets need e.g. warmup=100 to see more than that.
  dataset - 'auto' (default): the CIFAR-10 JPEG copy at ../shared/data beside
             the project when it exists, else tfds 'cifar10'; or any
             config.dataset value, e.g. folder:/data/cifar10-jpeg-q75.tar.gz.
"""

import os

from resnet_jax import configlib
from resnet_jax import sweep
from resnet_jax.errors import ConfigError

DEPTHS = (20, 32, 44, 56, 110)
SHORTCUTS = ('A', 'B', 'C', 'none')

# He et al. 2015, Table 6: CIFAR-10 test error (%), option A shortcuts. The
# paper gives no numbers for B/C on CIFAR, nor a table for plain nets (Fig. 6).
PAPER_TABLE6 = {
    'd20-A': {'top1_err': 8.75},
    'd32-A': {'top1_err': 7.51},
    'd44-A': {'top1_err': 7.17},
    'd56-A': {'top1_err': 6.97},
    'd110-A': {'top1_err': 6.43},
}

NOTES = """\
- Paper: He et al. 2015, Table 6 (CIFAR-10 test error, option A). ResNet-110 is the
  paper's best of 5 runs (mean 6.61 ± 0.16); the others are single runs. The paper has
  no CIFAR numbers for shortcuts B/C and shows plain nets only as curves (Fig. 6).
- The paper trains ResNet-110 at lr 0.01 until training error is below 80 % (about 400
  iterations), then at 0.1; `configs/cifar10.py:recipe=paper` uses a 400-step linear
  warmup for depth 110 instead.
- Only the `paper` preset is comparable to the paper's numbers."""

# Config overrides per preset, on top of configs/cifar10.py recipe=paper.
PRESETS = {
    'paper': {},
    'short': {
        # CIFAR fits on any accelerator: augment there, no host pipeline to wait on.
        'placement': 'device',
        'num_train_steps': 6_400,
        'lr_boundaries_steps': (3_200, 4_800),
        'eval_every_steps': 800,
        'checkpoint_every_steps': 800,
        'log_every_steps': 100,
    },
    # 300 steps of the paper's recipe (lr 0.1, divided by 10 at 150 and 225), eval
    # on 2,000 test images: enough on a 2-core CPU to see plain nets degrade with
    # depth (Fig. 6) for a few points, e.g. --only='d20-A-*,d20-none-*,d56-A-*,d56-none-*'.
    # (num_train_steps, lr_boundaries_steps and the periods follow `steps`/`evals`.)
    'cpu': {
        'eval_batch_size': 500,
        'num_eval_batches': 4,
        'log_every_steps': 20,
    },
    'smoke': {
        'num_train_steps': 50,
        'batch_size': 64,
        # Deep nets (110) blow up at lr 0.1 from step 0; the paper warms up too.
        'warmup_steps': 10,
        'lr_boundaries_steps': (25, 38),
        'eval_batch_size': 500,
        'num_eval_batches': 2,
        'eval_every_steps': 50,
        'checkpoint_every_steps': 50,
        'log_every_steps': 5,
    },
}

# Where the CIFAR-10 JPEG copy sits in the environment this project is developed in.
_LOCAL_COPY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           '..', 'shared', 'data', 'cifar10-jpeg-q75.tar.gz')


def dataset_value(dataset: str) -> str:
  """config.dataset for the 'dataset' argument ('auto': the local copy, else tfds)."""
  if dataset != 'auto':
    return dataset
  if os.path.isfile(_LOCAL_COPY):
    return 'folder:' + os.path.abspath(_LOCAL_COPY)
  return 'cifar10'


def _dataset_label(dataset: str) -> str:
  # The JPEG copy's pixels differ from CIFAR-10's: results must say which was used.
  if dataset.endswith('cifar10-jpeg-q75.tar.gz'):
    return 'CIFAR-10 (JPEG copy)'
  return 'CIFAR-10' if dataset == 'cifar10' else f'`{dataset}`'


def get_sweep(arg=None) -> sweep.Sweep:
  args = configlib.parse_arg(arg, preset='paper', seeds=1, dataset='auto', warmup=-1,
                             steps=300, evals=3)
  if args.preset not in PRESETS:
    raise ConfigError(
        f'unknown preset {args.preset!r}; valid presets: {", ".join(PRESETS)}')
  if args.seeds < 1:
    raise ConfigError(f'seeds={args.seeds} must be at least 1')
  if args.warmup < -1:
    raise ConfigError(f'warmup={args.warmup} must be -1 (the preset\'s) or >= 0')
  fixed = {'dataset': dataset_value(args.dataset), **PRESETS[args.preset]}
  name = f'depth_shortcut-{args.preset}'
  if args.preset == 'cpu':
    if args.steps < 4 or not 1 <= args.evals <= args.steps:
      raise ConfigError(f'steps={args.steps} must be >= 4 and evals={args.evals} in '
                        f'1..steps')
    every = args.steps // args.evals
    fixed.update(num_train_steps=args.steps,
                 lr_boundaries_steps=(args.steps // 2, 3 * args.steps // 4),
                 eval_every_steps=every, checkpoint_every_steps=every)
    if (args.steps, args.evals) != (300, 3):
      # 300 steps was the preset's only length: those runs keep their name.
      name += f'-{args.steps}steps'
      fixed['placement'] = 'device'
  if args.warmup >= 0:
    fixed['warmup_steps'] = args.warmup
    name += f'-warmup{args.warmup}'

  def overrides(seed, **_):
    # ResNet-110's warm-up (the paper's lr-0.01 start) comes with configs/cifar10.py,
    # unless the warmup argument overrides it.
    return {'seed': seed, **fixed}

  points = sweep.product(
      name='d{depth}-{shortcut}-s{seed}', group='d{depth}-{shortcut}',
      config='configs/cifar10.py:depth={depth},shortcut={shortcut},recipe=paper',
      overrides=overrides,
      depth=DEPTHS, shortcut=SHORTCUTS, seed=range(args.seeds))
  return sweep.Sweep(
      points=points, paper_results=PAPER_TABLE6, name=name,
      description=(f'{_dataset_label(fixed["dataset"])}: test error of CIFAR ResNets by '
                   'depth and shortcut option (none = plain net); He et al. 2015, '
                   f'Table 6 and Fig. 6. Preset `{args.preset}`'
                   + (f', warmup {args.warmup} steps' if args.warmup >= 0 else '')
                   + (' (a pipeline check, not comparable to the paper).'
                      if args.preset == 'smoke' else '.')),
      notes=NOTES, x='depth', series='shortcut', average_over='seed',
      series_labels={'none': 'plain', 'A': 'A', 'B': 'B', 'C': 'C'})
