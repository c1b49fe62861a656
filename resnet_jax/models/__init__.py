"""ResNet models in Flax linen: the whole family from one generic description.

    from resnet_jax import models
    model = models.create_model(config.model, num_classes=10, dtype='bfloat16')
    variables = model.init(rng, images, train=False)
    logits, updates = model.apply(variables, images, train=True,
                                  mutable=['batch_stats'])

Modules: `registry` (named variants, config -> ResNetSpec), `blocks` (residual
blocks, shortcuts, squeeze-and-excitation, stochastic depth), `resnet` (stem,
stages, head, create_model). No TensorFlow is imported.

With model.drop_path_rate or model.dropout_rate above 0, training needs a
'dropout' rng: `model.apply(..., train=True, rngs={'dropout': key})`.

Intermediate features (`features`): `model.apply(variables, images,
train=False, features=True)` -> {'stem': ..., 'stage1': ..., ...};
`feature_info(spec)` describes them (channels, reduction, timm's names).
"""

from resnet_jax.models.blocks import BasicBlock
from resnet_jax.models.blocks import BottleneckBlock
from resnet_jax.models.blocks import DropPath
from resnet_jax.models.blocks import Identity
from resnet_jax.models.blocks import Shortcut
from resnet_jax.models.blocks import SqueezeExcite
from resnet_jax.models.features import FeatureInfo
from resnet_jax.models.features import HEAD_OUTPUTS
from resnet_jax.models.features import feature_info
from resnet_jax.models.features import feature_names
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
    'BasicBlock', 'BottleneckBlock', 'DropPath', 'FeatureInfo', 'HEAD_OUTPUTS', 'Head',
    'Identity', 'MODEL_DEFAULTS', 'ResNet', 'ResNetSpec', 'Shortcut', 'SqueezeExcite',
    'Stage', 'Stem', 'VARIANTS', 'canonical_dtype', 'create_model', 'feature_info',
    'feature_names', 'resolve_spec',
]
