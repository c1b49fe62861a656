r"""Writes resnet_jax/weights/imagenet_classes.txt: the 1,000 ImageNet class names.

One name a line, line i = label i, taken from torchvision's weight metadata
(`ResNet50_Weights.IMAGENET1K_V1.meta['categories']`, the order of the
ILSVRC-2012 synsets that torchvision's and timm's ImageNet heads use); every
torchvision ResNet weight enum is checked to carry the same list. `python -m
resnet_jax.weights import` records these names in the imported workdir's
dataset.json, which `python -m resnet_jax.predict` reads.

Needs torchvision (benchmarks/peer/.venv):

    benchmarks/peer/.venv/bin/python experiments/imagenet_classes.py
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, 'resnet_jax', 'weights', 'imagenet_classes.txt')


def main() -> int:
  sys.path.insert(0, os.path.join(REPO, 'benchmarks', 'peer'))
  import torch_models  # pylint: disable=g-import-not-at-top
  torch_models.declare_torchvision_ops()
  from torchvision import models  # pylint: disable=g-import-not-at-top
  names = list(models.ResNet50_Weights.IMAGENET1K_V1.meta['categories'])
  enums = [getattr(models, n) for n in dir(models)
           if n.endswith('_Weights') and ('ResNet' in n or 'ResNeXt' in n)]
  for enum in enums:
    for weight in enum:
      if list(weight.meta['categories']) != names:
        print(f'{enum.__name__}.{weight.name} has other categories', file=sys.stderr)
        return 1
  if len(names) != 1000 or any('\n' in n or not n.strip() for n in names):
    print(f'unexpected categories: {len(names)}', file=sys.stderr)
    return 1
  with open(OUT, 'w', encoding='utf-8') as f:
    f.write('\n'.join(names) + '\n')
  print(f'wrote {OUT}: {len(names)} names, the same in {len(enums)} weight enums')
  return 0


if __name__ == '__main__':
  sys.exit(main())
