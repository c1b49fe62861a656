"""The PyTorch side of the peer benchmark: the same networks, written for torch.

CIFAR ResNet-(6n+2) with post-activation basic blocks and shortcut A (stride-2
subsampling, zero-padded channels) or C (1x1 conv + BN on every block), as He et
al. 2015 and `resnet_jax.models` build them; ImageNet ResNet-50 is
torchvision's (the same function as resnet_jax's `{'name': 'resnet50',
'shortcut': 'B'}`). Imported only by the torch worker of `compare.py`.
"""

import torch
from torch import nn
import torch.nn.functional as F

# torchvision 0.28 installed with --no-deps lacks its compiled ops; declaring
# the two that `import torchvision` registers fakes for lets the models load
# (REFERENCE.md section 1). Kept alive at module level: the library must outlive
# the import.
_TORCHVISION_OPS = None


def declare_torchvision_ops() -> None:
  global _TORCHVISION_OPS
  if _TORCHVISION_OPS is not None:
    return
  try:
    lib = torch.library.Library('torchvision', 'DEF')
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.define('qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor')
  except RuntimeError:  # A full torchvision build already defines them.
    lib = False
  _TORCHVISION_OPS = lib


def _conv_bn(cin: int, cout: int, k: int, stride: int):
  return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)


class CifarBlock(nn.Module):
  """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

  def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
    super().__init__()
    self.conv1, self.norm1 = _conv_bn(cin, cout, 3, stride)
    self.conv2, self.norm2 = _conv_bn(cout, cout, 3, 1)
    self.stride, self.extra, self.kind = stride, cout - cin, shortcut
    projects = shortcut == 'C' or (shortcut == 'B' and (stride != 1 or cin != cout))
    self.proj = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if projects else None

  def forward(self, x):
    y = F.relu(self.norm1(self.conv1(x)))
    y = self.norm2(self.conv2(y))
    if self.kind == 'none':
      return F.relu(y)
    if self.proj is not None:
      s = self.proj(x)
    else:
      s = x[:, :, ::self.stride, ::self.stride] if self.stride != 1 else x
      if self.extra:
        s = F.pad(s, (0, 0, 0, 0, 0, self.extra))
    return F.relu(y + s)


class CifarResNet(nn.Module):
  """CIFAR ResNet-`depth` (16/32/64 channels, n = (depth - 2) / 6 blocks per stage)."""

  def __init__(self, depth: int, shortcut: str = 'A', num_classes: int = 10):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1, self.norm1 = _conv_bn(3, 16, 3, 1)
    layers, cin = [], 16
    for i, width in enumerate((16, 32, 64)):
      for j in range(n):
        layers.append(CifarBlock(cin, width, 2 if (i and not j) else 1, shortcut))
        cin = width
    self.blocks = nn.Sequential(*layers)
    self.fc = nn.Linear(cin, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):  # He init, fan-out, as resnet_jax.
        nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

  def forward(self, x):
    x = self.blocks(F.relu(self.norm1(self.conv1(x))))
    return self.fc(x.mean((2, 3)))


def build(name: str, depth: int, shortcut: str, num_classes: int) -> nn.Module:
  """The torch network for a peer-benchmark model name ('cifar' or 'resnet50')."""
  if name == 'cifar':
    return CifarResNet(depth, shortcut, num_classes)
  if name == 'resnet50':
    declare_torchvision_ops()
    import torchvision  # pylint: disable=g-import-not-at-top
    return torchvision.models.resnet50(num_classes=num_classes)
  raise ValueError(f'unknown model {name!r}')
