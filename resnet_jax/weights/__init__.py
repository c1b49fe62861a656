"""Pretrained weights: PyTorch ResNet state dicts <-> resnet_jax variables, exactly.

    from resnet_jax import weights
    model, variables = weights.from_state_dict(state_dict, 'resnet50', 'torchvision')
    logits = model.apply(variables, images, train=False)
    state_dict = weights.to_state_dict(variables, 'resnet50', 'torchvision')

Sources: 'torchvision' and 'timm' (ImageNet ResNets, `ARCHS[source]` lists the
architectures), and 'torch_cifar' (CIFAR ResNets in the layout of
experiments/torch_parity.py). `mapping` holds the naming rules, `files` the
file formats and checkpoint workdirs, `synthetic` seeded random weights for
checks; `python -m resnet_jax.weights import|export` is the command line.
TensorFlow is not imported; PyTorch only to read `.pth` files.
"""

from resnet_jax.weights.mapping import ARCHS
from resnet_jax.weights.mapping import SOURCES
from resnet_jax.weights.mapping import arch_names
from resnet_jax.weights.mapping import find_arch
from resnet_jax.weights.mapping import from_state_dict
from resnet_jax.weights.mapping import key_table
from resnet_jax.weights.mapping import model_config
from resnet_jax.weights.mapping import to_state_dict
from resnet_jax.weights.synthetic import random_state_dict

__all__ = ['ARCHS', 'SOURCES', 'arch_names', 'find_arch', 'from_state_dict', 'key_table',
           'model_config', 'random_state_dict', 'to_state_dict']
