"""CIFAR-10 ResNet-(6n+2) of He et al. 2015, section 4.2.

Arguments (after ':'): depth (6n+2: 20, 32, 44, 56, 110, 1202), shortcut
(A, B, C, D, none), preact (true/false), recipe:
  quick - Adam, cosine schedule, 3 epochs: the laptop-CPU quickstart
          (ResNet-20 about 20 minutes on 2 cores).
  paper - the paper's recipe: batch 128, SGD momentum 0.9, weight decay 1e-4,
          lr 0.1 divided by 10 at 32k and 48k steps, 64k steps, training on the
          first 45k images (5k held out), test on the test set.

    python -m resnet_jax.main --config=configs/cifar10.py:depth=56,shortcut=A,recipe=paper \\
        --workdir=runs/c56

Expected (paper recipe): test error 8.75 / 7.51 / 7.17 / 6.97 / 6.43 % for
depth 20 / 32 / 44 / 56 / 110 (the paper's Table 6). Offline, add
--config.dataset=folder:../shared/data/cifar10-jpeg-q75.tar.gz (CIFAR-10 JPEG copy).
"""

from resnet_jax import configlib
from resnet_jax.errors import ConfigError

base = configlib.sibling(__file__, 'base')


def get_config(arg=None):
  args = configlib.parse_arg(arg, depth=20, shortcut='A', preact=False, recipe='quick')
  config = base.get_config()
  config.dataset = 'cifar10'
  config.augment = 'cifar'
  config.model.family = 'cifar'
  config.model.depth = args.depth
  config.model.shortcut = args.shortcut
  config.model.preact = args.preact

  if args.recipe == 'quick':
    config.optimizer = 'adam'
    config.learning_rate = 2e-3
    config.schedule = 'cosine'
    config.warmup_steps = 100
    config.batch_size = 128
    config.num_epochs = 3.0
    config.log_every_steps = 50
  elif args.recipe == 'paper':
    config.train_split = 'train[:45000]'
    config.eval_split = 'test'
    config.batch_size = 128
    config.optimizer = 'sgd'
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.weight_decay_type = 'l2'
    config.schedule = 'piecewise'
    config.lr_boundaries_steps = (32_000, 48_000)
    config.lr_decay_factor = 0.1
    config.num_train_steps = 64_000
    config.log_every_steps = 200
    config.eval_every_steps = 4_000
    config.checkpoint_every_steps = 4_000
    if args.depth >= 110:
      # The paper starts ResNet-110 at lr 0.01 until training error is below 80 %
      # (about 400 steps); at 0.1 from step 0 it diverges. A linear warmup does that.
      config.warmup_steps = 400
  else:
    raise ConfigError(
        f"unknown recipe {args.recipe!r}; valid recipes: 'quick', 'paper'")
  return config
