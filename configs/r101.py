"""ImageNet ResNet-101 (v1.5, option B shortcuts), standard 90-epoch recipe.

    python -m resnet_jax.main --config=configs/r101.py --workdir=runs/r101 \
        --config.data_dir=/path/to/tensorflow_datasets

Expected: about 77.4 % top-1 on the ImageNet validation set (torchvision's recipe
reaches this figure for the same architecture). Needs the prepared
'imagenet2012' tfds dataset (see README, "Offline datasets").
"""

from resnet_jax import configlib

imagenet_base = configlib.sibling(__file__, 'imagenet_base')


def get_config(arg=None):
  del arg
  return imagenet_base.get_config(depth=101)
