"""Synthetic data generated on the device: measures the model and step alone.

    python -m resnet_jax.main --config=configs/fake_data.py --workdir=/tmp/fake
    python -m resnet_jax.benchmark --config=configs/fake_data.py

Argument: model=r50 (default; ImageNet ResNet-50 at 224x224, 1000 classes) or
model=cifar20 (CIFAR ResNet-20 at 32x32, 10 classes). Loss values are
meaningless (labels are random); the result is throughput.
"""

from resnet_jax import configlib
from resnet_jax.errors import ConfigError

base = configlib.sibling(__file__, 'base')
imagenet_base = configlib.sibling(__file__, 'imagenet_base')


def get_config(arg=None):
  args = configlib.parse_arg(arg, model='r50')
  if args.model == 'r50':
    config = imagenet_base.get_config(depth=50)
    config.num_classes = 1000
    config.batch_size = 256
  elif args.model == 'cifar20':
    config = base.get_config()
    config.model.family = 'cifar'
    config.model.depth = 20
    config.image_size = 32
    config.num_classes = 10
    config.batch_size = 128
  else:
    raise ConfigError(
        f"unknown model {args.model!r}; valid: 'r50', 'cifar20'")
  config.dataset = 'fake'
  config.augment = 'none'
  config.warmup_epochs = 0.0  # 'Epochs' of fake data mean nothing.
  config.warmup_steps = 0
  config.num_train_steps = 200
  config.log_every_steps = 50
  config.eval_every_steps = 200
  config.num_eval_batches = 2
  config.checkpoint_every_steps = -1
  return config
