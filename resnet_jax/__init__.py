"""resnet_jax: residual networks in JAX/Flax.

Importing the package is cheap (no jax, no TensorFlow); import submodules for
the pieces: `resnet_jax.models`, `resnet_jax.train`, `resnet_jax.data`, ...
"""

__version__ = '0.1.0'
