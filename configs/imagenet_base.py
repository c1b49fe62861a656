"""Shared ImageNet recipe for configs/r18.py ... r152.py; not run by itself.

The standard large-batch recipe (Goyal et al. 2017, as in flax examples/imagenet):
SGD with Nesterov momentum 0.9, lr 0.1 x batch/256 with 5 warmup epochs then cosine,
weight decay 1e-4 on kernels, 90 epochs, bfloat16 compute, torchvision-style
ResNet v1.5 with projection shortcuts (option B).
"""

from resnet_jax import configlib

base = configlib.sibling(__file__, 'base')


def get_config(depth: int = 50):
  """ImageNet ResNet-`depth` with the standard recipe."""
  config = base.get_config()
  config.dataset = 'imagenet2012'
  config.augment = 'imagenet'
  config.image_size = 224

  config.model.name = f'resnet{depth}'
  config.model.family = 'imagenet'
  config.model.depth = depth
  config.model.shortcut = 'B'
  config.dtype = 'bfloat16'

  config.batch_size = 1024
  config.optimizer = 'nesterov'
  config.learning_rate = 0.1 * config.batch_size / 256
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.schedule = 'cosine'
  config.warmup_epochs = 5.0
  config.num_epochs = 90.0
  config.log_every_steps = 100
  config.eval_every_steps = -1
  config.checkpoint_every_steps = 1000
  return config
