"""ResNet models in Flax linen: the whole family from one generic description.

    from resnet_jax import models
    model = models.create_model(config.model, num_classes=10, dtype='bfloat16')
    variables = model.init(rng, images, train=False)
    logits, updates = model.apply(variables, images, train=True,
                                  mutable=['batch_stats'])

Modules: `registry` (named variants, config -> ResNetSpec), `blocks` (residual
blocks and shortcuts), `resnet` (stem, stages, head, create_model). No
TensorFlow is imported.
"""

from resnet_jax.models.blocks import BasicBlock
from resnet_jax.models.blocks import BottleneckBlock
from resnet_jax.models.blocks import Identity
from resnet_jax.models.blocks import Shortcut
from resnet_jax.models.registry import MODEL_DEFAULTS
from resnet_jax.models.registry import ResNetSpec
from resnet_jax.models.registry import VARIANTS
from resnet_jax.models.registry import resolve_spec
from resnet_jax.models.resnet import Head
from resnet_jax.models.resnet import ResNet
from resnet_jax.models.resnet import Stage
from resnet_jax.models.resnet import Stem
from resnet_jax.models.resnet import canonical_dtype
from resnet_jax.models.resnet import create_model

__all__ = [
    'BasicBlock', 'BottleneckBlock', 'Head', 'Identity', 'MODEL_DEFAULTS', 'ResNet',
    'ResNetSpec', 'Shortcut', 'Stage', 'Stem', 'VARIANTS', 'canonical_dtype',
    'create_model', 'resolve_spec',
]
