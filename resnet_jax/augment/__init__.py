"""The modern recipes' augmentations, each checked against timm / torchvision.

- `autoaugment`: RandAugment (timm's config strings), TrivialAugment-wide and
  random erasing: numpy + PIL, per example, in the loader's worker processes.
- `mixup`: Mixup and CutMix over the global batch, on the device, inside the
  per-device train step.

Importing this package imports neither jax nor TensorFlow.
"""
