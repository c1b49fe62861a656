"""The PyTorch side of the input-pipeline benchmark: DataLoader + torchvision transforms.

What a PyTorch user would run for the same input, on the same files:
ImageFolder + RandomResizedCrop(224) + RandomHorizontalFlip + PILToTensor
(ImageNet-style training), Resize(256) + CenterCrop(224) (evaluation), and
RandomCrop(32, padding=4) + flip over decoded CIFAR arrays (the way
torchvision.datasets.CIFAR10 serves them: a PIL image per item). Batches of
uint8, shuffled, `--workers` worker processes. Run by
`python -m resnet_jax.pipeline_benchmark` in the peer venv (setup.sh); prints
one JSON line.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # pylint: disable=wrong-import-position

torch_models.declare_torchvision_ops()
import torch  # pylint: disable=wrong-import-position,g-import-not-at-top
import torchvision  # pylint: disable=wrong-import-position,g-import-not-at-top
from torchvision import transforms as T  # pylint: disable=wrong-import-position,g-import-not-at-top


class Arrays(torch.utils.data.Dataset):
  """Decoded uint8 images served as PIL images, as torchvision's CIFAR10 does."""

  def __init__(self, images: np.ndarray, transform):
    self.images, self.transform = images, transform

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    return self.transform(Image.fromarray(np.asarray(self.images[i]))), 0


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--kind', choices=['imagenet_train', 'imagenet_eval', 'cifar'])
  parser.add_argument('--root', help='image folder (imagenet) or .npy of images (cifar)')
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--images', type=int, default=6400)
  parser.add_argument('--warmup_batches', type=int, default=10)
  args = parser.parse_args()
  torch.set_num_threads(1)
  if args.kind == 'imagenet_train':
    dataset = torchvision.datasets.ImageFolder(args.root, T.Compose([
        T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()]))
  elif args.kind == 'imagenet_eval':
    dataset = torchvision.datasets.ImageFolder(args.root, T.Compose([
        T.Resize(256), T.CenterCrop(224), T.PILToTensor()]))
  else:
    dataset = Arrays(np.load(args.root, mmap_mode='r'), T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.PILToTensor()]))
  loader = torch.utils.data.DataLoader(
      dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
      drop_last=True, persistent_workers=args.workers > 0)

  def batches():
    while True:
      yield from loader

  it = batches()
  for _ in range(args.warmup_batches):
    next(it)
  n = max(1, args.images // args.batch_size)
  start = time.perf_counter()
  for _ in range(n):
    images, _ = next(it)
  seconds = time.perf_counter() - start
  print(json.dumps({'images_per_sec': n * args.batch_size / seconds,
                    'shape': list(images.shape), 'torch': torch.__version__,
                    'torchvision': torchvision.__version__}), flush=True)


if __name__ == '__main__':
  main()
