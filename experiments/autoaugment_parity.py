r"""timm / torchvision parity of resnet_jax.augment.autoaugment: test fixtures, summary, timing.

Runs in the peer venv (PyTorch, torchvision, timm; benchmarks/peer/README.md):

    benchmarks/peer/.venv/bin/python experiments/autoaugment_parity.py \
        --out=tests/fixtures/autoaugment
    benchmarks/peer/.venv/bin/python experiments/autoaugment_parity.py --bench

--out writes what tests/test_autoaugment.py compares against, all produced by
timm 1.0 (RandAugment, RandomErasing) and torchvision (TrivialAugmentWide):

  reference.json  versions; timm's op sets and weights; magnitude -> argument
                  tables (level functions, and AugmentOp's noise/clamp with
                  scripted draws); torchvision's bins; the op cases of
                  reference.npz; every random draw timm/torchvision made in the
                  recorded pipelines (to replay through ours); op-choice and
                  argument histograms over many seeded timm draws.
  reference.npz   the two test images (a synthetic 64x48 photo-like image;
                  a CIFAR-10 image when ../shared/data has the JPEG copy, else
                  a second synthetic one); the first output of each op on the
                  synthetic image (every op case also has a SHA-256 of its
                  output in reference.json); whole RandAugment / TrivialAugment
                  outputs on the CIFAR image; what timm's RandomErasing wrote
                  into each box.

It then replays everything through resnet_jax.augment.autoaugment and prints a
short parity summary (the tests check the same from the fixtures alone).
--bench times one plain loop on 224x224 images, one core, of ours and of
timm's / torchvision's equivalents (steady state).
"""

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import random
import sys
import tarfile
import time
import types

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks', 'peer'))
sys.path.insert(0, ROOT)

import torch_models  # pylint: disable=wrong-import-position

torch_models.declare_torchvision_ops()  # Before torchvision / timm.

import timm  # pylint: disable=wrong-import-position
import torch  # pylint: disable=wrong-import-position
import torchvision  # pylint: disable=wrong-import-position
import PIL  # pylint: disable=wrong-import-position
from timm.data import auto_augment as timm_aa  # pylint: disable=wrong-import-position
from timm.data import random_erasing as timm_re  # pylint: disable=wrong-import-position
from torchvision.transforms import autoaugment as tv_aa  # pylint: disable=wrong-import-position
from torchvision.transforms import InterpolationMode  # pylint: disable=wrong-import-position


def _load_ours():
  # By path: the peer venv lacks what the resnet_jax.data package imports
  # (jax, grain, ...); autoaugment.py itself needs numpy and PIL only.
  spec = importlib.util.spec_from_file_location(
      'resnet_jax_autoaugment', os.path.join(ROOT, 'resnet_jax', 'augment', 'autoaugment.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ours = _load_ours()

CIFAR = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'cifar10-jpeg-q75.tar.gz')
CIFAR_MEMBER = 'train/bird/0003.jpg'
IMAGENET_FILL = (124, 116, 104)  # timm's img_mean: round(255 * ImageNet mean).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
# Configs whose whole pipeline is recorded and replayed, and sampled for the
# distribution checks; '+bilinear' fixes timm's interpolation (hparams).
PIPELINE_CONFIGS = ('rand-m9-mstd0.5-inc1', 'rand-m7-n3-mstd0.5',
                    'rand-m15-n3-mstd4-mmax12-p0.8',
                    'rand-m8-mstd101-tweights', 'rand-m10-n1-p1.0-t3aw+bilinear')
STATS_CONFIGS = ('rand-m9-mstd0.5-inc1', 'rand-m15-n3-mstd4-mmax12-p0.8',
                 'rand-m8-mstd101-tweights')
STATS_DRAWS = 20000
# Config strings whose parse by timm (rand_augment_transform) is recorded.
PARSE_CONFIGS = ('rand', 'rand-m9-mstd0.5-inc1', 'rand-mstd0.5-inc1-m9', 'rand-m9-mstd0.5',
                 'rand-n3-m7', 'rand-m15-mmax20-mstd101', 'rand-m12-mmax15-mstd100',
                 'rand-p1.0-mstd0', 'rand-m9-tweights', 'rand-m9-inc1-tweights', 'rand-t3a',
                 'rand-m10-n1-t3aw-inc1', 'rand-inc0-m6-n1-p0.25', 'rand-n0', 'rand-m0-mstd1.5e0')
# Magnitude -> argument tables: levels, and raw (noisy) magnitudes before clamping.
LEVELS = (0, 0.5, 1, 2.3, 3, 4.5, 5, 6.7, 7, 9, 9.7, 10)
RAW_MAGNITUDES = (-1.3, 3.7, 9.6, 10.0, 10.4, 12.5, 25.0)
CLAMP_CONFIGS = ('rand-m9-mstd0.5', 'rand-m9-mstd0.5-inc1', 'rand-m9-mstd0.5-mmax12-inc1',
                 'rand-m9-mstd101-inc1', 'rand-m20-mstd101-mmax15', 'rand-m14-inc1',
                 'rand-m8-p1.0-t3a')


def synthetic_image(width=64, height=48, seed=0):
  """A photo-like RGB image: smooth gradients, hard-edged shapes, fine texture."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  u, v = x / width, y / height
  shift = seed * 0.37
  r = 40 + 150 * u + 30 * np.sin(6.0 * v + shift)
  g = 60 + 120 * v + 20 * np.cos(5.0 * u - shift)
  b = 90 + 60 * np.sin(3.0 * (u + v) + shift)
  texture = 4 * np.sin(1.9 * x + 0.7 * y) * np.cos(1.3 * y - 0.4 * x)
  img = np.stack([r, g, b], -1) + texture[..., None]
  disc = (x - 0.32 * width) ** 2 + (y - 0.45 * height) ** 2 < (0.22 * height) ** 2
  img[disc] = img[disc] * 0.3 + np.array([200, 50, 35]) * 0.7
  box = (x > 0.6 * width) & (x < 0.92 * width) & (y > 0.58 * height) & (y < 0.9 * height)
  img[box] = [35, 150, 80]
  line = np.abs(y - 0.35 * x - 2) < 1.0
  img[line] = [15, 15, 30]
  img[2:6, 4:60] = [250, 245, 235]  # A near-white bar: autocontrast / solarize see it.
  return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def cifar_image():
  """A CIFAR-10 image from the JPEG copy, or None where it is absent."""
  if not os.path.exists(CIFAR):
    return None
  with tarfile.open(CIFAR) as tar:
    for member in tar:
      if member.name == CIFAR_MEMBER:
        return np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert('RGB'))
  return None


class RecordingRandom:
  """Stands in for the `random` module inside timm: seeded, logs every draw."""

  def __init__(self, seed, log):
    self._random = random.Random(seed)
    self.log = log

  def random(self):
    value = self._random.random()
    self.log.append(['random', value])
    return value

  def gauss(self, mu, sigma):
    value = self._random.gauss(mu, sigma)
    self.log.append(['gauss', mu, sigma, value])
    return value

  def uniform(self, a, b):
    value = self._random.uniform(a, b)
    self.log.append(['uniform', a, b, value])
    return value

  def randint(self, a, b):
    value = self._random.randint(a, b)
    self.log.append(['randint', a, b, value])
    return value

  def choice(self, seq):
    index = self._random.randrange(len(seq))
    self.log.append(['choice', len(seq), index])
    return seq[index]


class ScriptedRandom:
  """Stands in for `random` in timm with given values: random() pops, gauss/uniform return `raw`."""

  def __init__(self, randoms, raw, log):
    self.randoms, self.raw, self.log = list(randoms), raw, log

  def random(self):
    return self.randoms.pop(0)

  def gauss(self, mu, sigma):
    self.log.append(['gauss', mu, sigma])
    return self.raw

  def uniform(self, a, b):
    self.log.append(['uniform', a, b])
    return self.raw

  def choice(self, seq):
    return seq[0]


def recording_numpy(seed, log):
  """Stands in for `np` inside timm's RandAugment.__call__: logs the op choice."""
  state = np.random.RandomState(seed)

  def choice(ops, size, replace=True, p=None):
    index = state.choice(len(ops), size, replace=replace, p=p)
    log.append(['np_choice', len(ops), int(size), bool(replace),
                None if p is None else [float(x) for x in p], index.tolist()])
    return [ops[i] for i in index]
  return types.SimpleNamespace(random=types.SimpleNamespace(choice=choice))


@contextlib.contextmanager
def patched(module, **attrs):
  old = {k: getattr(module, k) for k in attrs}
  for k, v in attrs.items():
    setattr(module, k, v)
  try:
    yield
  finally:
    for k, v in old.items():
      setattr(module, k, v)


def timm_rand_augment(config, image_size):
  """timm's RandAugment as create_transform builds it (ImageNet mean as fill)."""
  config, _, interpolation = config.partition('+')
  hparams = dict(translate_const=int(image_size * 0.45), img_mean=IMAGENET_FILL)
  if interpolation:
    hparams['interpolation'] = ours._INTERPOLATIONS[interpolation]  # pylint: disable=protected-access
  return timm_aa.rand_augment_transform(config, hparams), interpolation or 'random'


def resample_name(resample):
  return {int(v): k for k, v in ours._INTERPOLATIONS.items()}[int(resample)]  # pylint: disable=protected-access


# ----------------------------------------------------------------------------
# Fixture parts.
# ----------------------------------------------------------------------------


def timm_parses():
  """What timm's rand_augment_transform makes of each PARSE_CONFIGS string."""
  out = {}
  for config in PARSE_CONFIGS:
    transform = timm_aa.rand_augment_transform(config, dict(img_mean=IMAGENET_FILL,
                                                            translate_const=100))
    op = transform.ops[0]
    weights = transform.choice_weights
    out[config] = dict(
        names=[o.name for o in transform.ops], num_layers=transform.num_layers,
        prob=op.prob, magnitude=op.magnitude, magnitude_std=op.magnitude_std,
        magnitude_max=op.magnitude_max,
        weights=None if weights is None else [float(w) for w in weights])
  return out


def timm_level_args(name, level, negate):
  """timm's LEVEL_TO_ARG[name](level) with the random sign scripted."""
  fn = timm_aa.LEVEL_TO_ARG[name]
  # _randomly_negate negates when random.random() > 0.5.
  with patched(timm_aa, random=ScriptedRandom([0.9 if negate else 0.1], 0, [])):
    return () if fn is None else fn(level, dict(timm_aa._HPARAMS_DEFAULT))  # pylint: disable=protected-access


def level_tables():
  """timm's LEVEL_TO_ARG at LEVELS, both signs (the random sign scripted)."""
  return {name: [[level, negate, list(timm_level_args(name, level, negate))]
                 for level in LEVELS for negate in (False, True)]
          for name in ours.OPS}


def clamp_tables():
  """AugmentOp's noisy magnitude -> argument with scripted draws, per config.

  For each op of the config's set and each raw draw r (what gauss/uniform
  returns), timm applies the op (random() = 0 passes the probability check),
  clamps r, draws the sign (scripted both ways) and calls the op: its
  arguments are recorded, with the gauss/uniform call's parameters.
  """
  tables = {}
  for config in CLAMP_CONFIGS:
    transform, _ = timm_rand_augment(config, 224)
    rows, draw_calls = [], set()
    for index, op in enumerate(transform.ops):
      for raw in RAW_MAGNITUDES:
        for negate in (False, True):
          calls, log = [], []
          op.aug_fn = lambda img, *args, **kw: calls.append(list(args)) or img  # pylint: disable=cell-var-from-loop
          randoms = ([0.0] if op.prob < 1.0 else []) + [0.9 if negate else 0.1]
          with patched(timm_aa, random=ScriptedRandom(randoms, raw, log)):
            op(None)
          draw_calls.add(tuple(log[0]) if log else None)
          rows.append([index, raw, negate, calls[0]])
    # One config draws every op's magnitude the same way: gauss(m, mstd),
    # uniform(0, m), or not at all.
    (draw_call,) = draw_calls
    tables[config] = dict(ops=[op.name for op in transform.ops],
                          draw=None if draw_call is None else list(draw_call), rows=rows)
  return tables


def ra_op_cases(image):
  """(case, timm output) per op and argument on `image`."""
  pil = Image.fromarray(image)
  width = image.shape[1]
  cases = []

  def add(name, args, resample=None, fill=None):
    cases.append(dict(op=name, args=list(args), resample=resample, fill=fill))

  geometric = {'Rotate': timm_aa.rotate, 'ShearX': timm_aa.shear_x, 'ShearY': timm_aa.shear_y,
               'TranslateXRel': timm_aa.translate_x_rel, 'TranslateYRel': timm_aa.translate_y_rel}
  for name in geometric:
    for level, negate, resample in ((10, False, 'bilinear'), (10, True, 'bicubic'),
                                    (4.5, False, 'bicubic'), (4.5, True, 'bilinear')):
      add(name, timm_level_args(name, level, negate), resample, list(IMAGENET_FILL))
  add('Rotate', (23.7,), 'nearest', [128, 128, 128])
  for name, fn in (('TranslateX', timm_aa.translate_x_abs), ('TranslateY', timm_aa.translate_y_abs)):
    geometric[name] = fn
    # create_transform's translate_const: int(0.45 * image size).
    add(name, ((7 / 10) * float(int(0.45 * width)),), 'bicubic', list(IMAGENET_FILL))
    add(name, (-(10 / 10) * float(int(0.45 * width)),), 'bilinear', list(IMAGENET_FILL))
  for name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    for factor in (0.1, 0.55, 1.9):
      add(name, (factor,))
  for bits in (1, 2, 4, 8):  # 0 bits: timm raises under Pillow 13.
    add('Posterize', (bits,))
  for thresh in (0, 26, 128, 230, 256):
    add('Solarize', (thresh,))
  for amount in (33, 110):
    add('SolarizeAdd', (amount,))
  for name in ('AutoContrast', 'Equalize', 'Invert'):
    add(name, ())
  add('Desaturate', (0.8,))
  for radius in (0.1, 1.3):
    add('GaussianBlur', (radius,))

  outputs = []
  for case in cases:
    fn = geometric.get(case['op']) or timm_aa.NAME_TO_OP[case['op']]
    kwargs = {}
    if case['resample'] is not None:
      kwargs = dict(resample=ours._INTERPOLATIONS[case['resample']],  # pylint: disable=protected-access
                    fillcolor=tuple(case['fill']))
    outputs.append(np.asarray(fn(pil, *case['args'], **kwargs)))
  return cases, np.stack(outputs)


def ta_op_cases(image):
  """(case, torchvision output) per TrivialAugment op at some bins and signs."""
  pil = Image.fromarray(image)
  bins = tv_aa.TrivialAugmentWide()._augmentation_space(31)  # pylint: disable=protected-access
  cases = []
  for name, (magnitudes, signed) in bins.items():
    if magnitudes.ndim == 0:
      cases.append(dict(op=name, magnitude=0.0))
      continue
    geometric = name in ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate')
    picks = ((30, 1.0), (7, -1.0)) if geometric else (
        ((30, -1.0), (19, 1.0)) if signed else ((5, 1.0), (25, 1.0)))
    for k, sign in picks:
      cases.append(dict(op=name, magnitude=sign * float(magnitudes[k].item())))
  for name, k in (('ShearX', 19), ('TranslateY', 24), ('Rotate', 11)):
    for interpolation, fill in (('bilinear', list(IMAGENET_FILL)), ('bicubic', None)):
      cases.append(dict(op=name, magnitude=float(bins[name][0][k].item()),
                        interpolation=interpolation, fill=fill))
  outputs = []
  for case in cases:
    mode = InterpolationMode(case.get('interpolation', 'nearest'))
    outputs.append(np.asarray(tv_aa._apply_op(  # pylint: disable=protected-access
        pil, case['op'], case['magnitude'], interpolation=mode, fill=case.get('fill'))))
  return cases, np.stack(outputs)


def digest(array):
  """SHA-256 of a uint8 image's bytes (C order): exact equality without the image."""
  return hashlib.sha256(np.ascontiguousarray(array, np.uint8).tobytes()).hexdigest()


def keep_one_per_op(cases, outputs):
  """Digests every case's output; keeps the first output of each op as an array.

  The arrays show how far a failing case is off; the digests keep the fixture
  small while still checking every case exactly.
  """
  kept, seen = [], set()
  for case, output in zip(cases, outputs):
    case['sha256'] = digest(output)
    case['stored'] = None
    if case['op'] not in seen:
      seen.add(case['op'])
      case['stored'] = len(kept)
      kept.append(output)
  return np.stack(kept)


def ta_bins():
  out = {}
  for num_bins in (31, 11):
    space = tv_aa.TrivialAugmentWide()._augmentation_space(num_bins)  # pylint: disable=protected-access
    out[str(num_bins)] = {
        name: [None if m.ndim == 0 else [float(x) for x in m.tolist()], bool(signed)]
        for name, (m, signed) in space.items()}
  return out


def posterize_zero_bits_raises():
  """Whether timm's posterize refuses 0 bits (Pillow 13 raises ValueError)."""
  try:
    timm_aa.posterize(Image.new('RGB', (4, 4)), 0)
  except ValueError:
    return True
  return False


@contextlib.contextmanager
def black_posterize_zero(hits):
  """timm with Pillow < 13's answer to 0-bit Posterize (black), counting uses.

  Pillow 13 raises for 0 bits, so timm's RandAugment fails where it draws
  them; the recorded pipelines get the black image instead, as ours does.
  """
  original = timm_aa.posterize

  def posterize(img, bits_to_keep, **kwargs):
    if bits_to_keep <= 0:
      hits.append(1)
      return Image.new(img.mode, img.size)
    return original(img, bits_to_keep, **kwargs)
  names = ('Posterize', 'PosterizeIncreasing', 'PosterizeOriginal')
  old = {n: timm_aa.NAME_TO_OP[n] for n in names}
  timm_aa.NAME_TO_OP.update({n: posterize for n in names})
  try:
    yield
  finally:
    timm_aa.NAME_TO_OP.update(old)


def ra_pipelines(image, samples=6, posterize_hits=None):
  """timm RandAugment on `image`, seeded and recorded: [(config, seed, log)], outputs."""
  pil = Image.fromarray(image)
  records, outputs = [], []
  for c, config in enumerate(PIPELINE_CONFIGS):
    # AugmentOp binds its op when built: build under the substitution.
    with black_posterize_zero(posterize_hits if posterize_hits is not None else []):
      transform, interpolation = timm_rand_augment(config, image.shape[0])
    for k in range(samples):
      seed = 1000 * c + k
      log = []
      with patched(timm_aa, random=RecordingRandom(seed, log), np=recording_numpy(seed, log)):
        out = transform(pil)
      records.append(dict(config=config.partition('+')[0], interpolation=interpolation,
                          seed=seed, log=log))
      outputs.append(np.asarray(out))
  return records, np.stack(outputs)


def ta_pipelines(image, samples=12):
  """torchvision TrivialAugmentWide on `image`, seeded, its torch.randint draws logged."""
  pil = Image.fromarray(image)
  records, outputs = [], []
  original = torch.randint
  for k in range(samples):
    log = []

    def randint(high, size, **kwargs):
      value = original(high, size, **kwargs)
      log.append(['randint', int(high), int(value.item())])  # pylint: disable=cell-var-from-loop
      return value
    torch.manual_seed(k)
    fill = list(IMAGENET_FILL) if k % 2 else None
    with patched(torch, randint=randint):
      out = tv_aa.TrivialAugmentWide(fill=fill)(pil)
    records.append(dict(seed=k, fill=fill, log=log))
    outputs.append(np.asarray(out))
  return records, outputs


def erasing_cases(image):
  """timm RandomErasing on the normalised `image`: draws, boxes and what it wrote."""
  x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
  x = (x - torch.tensor(IMAGENET_MEAN).float()[:, None, None]) / torch.tensor(
      IMAGENET_STD).float()[:, None, None]
  settings = []
  for mode in ('const', 'rand', 'pixel'):
    for max_count in (1, 3):
      settings.append(dict(mode=mode, probability=1.0, max_count=max_count,
                           min_area=0.02, max_area=1 / 3, min_aspect=0.3))
  settings.append(dict(mode='pixel', probability=0.5, max_count=2, min_area=0.1,
                       max_area=0.4, min_aspect=0.5))
  cases, crops = [], {}
  for s, setting in enumerate(settings):
    for seed in range(2):
      log, pixels = [], []

      def get_pixels(per_pixel, rand_color, patch_size, dtype, device):
        value = original_get_pixels(per_pixel, rand_color, patch_size, dtype=dtype, device=device)
        pixels.append((list(patch_size), value))  # pylint: disable=cell-var-from-loop
        return value
      original_get_pixels = timm_re._get_pixels  # pylint: disable=protected-access
      erase = timm_re.RandomErasing(
          setting['probability'], min_area=setting['min_area'], max_area=setting['max_area'],
          min_aspect=setting['min_aspect'], mode=setting['mode'],
          max_count=setting['max_count'], device='cpu')
      torch.manual_seed(100 * s + seed)
      with patched(timm_re, random=RecordingRandom(100 * s + seed, log), _get_pixels=get_pixels):
        out = erase(x.clone())
      # Boxes: each successful attempt draws top then left, then the fill.
      tops_lefts = [e[3] for e in log if e[0] == 'randint' and e[1] == 0]
      boxes = []
      expected = x.clone()
      for j, (size, value) in enumerate(pixels):
        top, left = tops_lefts[2 * j], tops_lefts[2 * j + 1]
        _, h, w = size
        boxes.append([top, left, h, w])
        expected[:, top:top + h, left:left + w] = value
      assert torch.equal(out, expected), 'timm wrote outside its boxes'
      # What timm wrote into each box (later boxes may overlap earlier ones):
      # [1, 1, C] for 'const' (zeros) and 'rand', [h, w, C] for 'pixel'.
      key = f'erase_{len(cases)}'
      for j, (_, value) in enumerate(pixels):
        crops[f'{key}_box{j}'] = value.permute(1, 2, 0).numpy()
      cases.append(dict(setting, seed=100 * s + seed, log=log, boxes=boxes, key=key))
  return cases, crops


def _summary_key(value):
  return round(float(value), 9)


def draw_statistics(records, names, num_layers):
  """Histograms of op choice, application, repeats and arguments.

  Args:
    records: per image (chosen op indices, [(name, first arg or None)] applied).
    names: the config's op names.
    num_layers: ops chosen per image.

  Returns:
    dict of count tables (timm's binning, stored so that the test bins its
    own draws the same way).
  """
  choice = np.zeros((num_layers, len(names)), np.int64)
  repeats = np.zeros(2, np.int64)
  applied = np.zeros(2, np.int64)
  args = {}
  for chosen, ops in records:
    for layer, index in enumerate(chosen):
      choice[layer, index] += 1
    repeats[int(len(set(chosen)) < len(chosen))] += 1
    applied[0] += len(ops)
    applied[1] += len(chosen) - len(ops)
    for name, arg in ops:
      if arg is not None:
        args.setdefault(name, []).append(arg)
  arg_tables = {}
  for name, values in sorted(args.items()):
    values = np.asarray(values, np.float64)
    unique = np.unique(values)
    if len(unique) <= 16:
      categories = [_summary_key(u) for u in unique]
      counts = [int(np.sum(np.isclose(values, u, rtol=0, atol=1e-9))) for u in unique]
      arg_tables[name] = dict(categories=categories, counts=counts)
    else:
      edges = np.quantile(values, np.linspace(0.1, 0.9, 9))
      counts = np.bincount(np.searchsorted(edges, values, side='right'), minlength=10)
      arg_tables[name] = dict(edges=edges.tolist(), counts=counts.tolist())
  return dict(choice=choice.tolist(), repeats=repeats.tolist(),
              applied=applied.tolist(), args=arg_tables)


def timm_statistics(config, draws=STATS_DRAWS, seed=12345):
  """draw_statistics of timm's RandAugment over `draws` images (ops not run)."""
  transform, _ = timm_rand_augment(config, 224)
  applied = []
  for op in transform.ops:
    op.aug_fn = (lambda name: lambda img, *args, **kw: applied.append(
        (name, args[0] if args else None)) or img)(op.name)
  log = []
  records = []
  with patched(timm_aa, random=random.Random(seed), np=recording_numpy(seed, log)):
    for _ in range(draws):
      applied.clear()
      transform(None)
      records.append((log[-1][5], list(applied)))
  names = [op.name for op in transform.ops]
  return dict(config=config, draws=draws, names=names,
              **draw_statistics(records, names, transform.num_layers))


# ----------------------------------------------------------------------------
# Replays through ours, for the summary.
# ----------------------------------------------------------------------------


class ReplayRng:
  """Answers our sampler's Generator calls with timm's / torchvision's logged draws."""

  def __init__(self, log, normals=()):
    self.log = list(log)
    self.normals = list(normals)

  def _next(self, kind):
    entry = self.log.pop(0)
    assert entry[0] == kind, (entry, kind)
    return entry

  def choice(self, a, size, replace=True, p=None):
    e = self._next('np_choice')
    assert (e[1], e[2], e[3]) == (a, size, replace) and (e[4] is None) == (p is None)
    return np.array(e[5])

  def random(self):
    return self._next('random')[1]

  def normal(self, loc, scale):
    e = self._next('gauss')
    assert (e[1], e[2]) == (loc, scale)
    return e[3]

  def uniform(self, low, high):
    e = self._next('uniform')
    assert (e[1], e[2]) == (low, high), (e, low, high)
    return e[3]

  def integers(self, low, high=None):
    e = self.log.pop(0)
    if e[0] == 'choice':  # timm's random.choice(interpolations).
      assert high is None and e[1] == low
      return e[2]
    if e[0] == 'randint' and len(e) == 3:  # torch.randint(high).
      assert high is None and e[1] == low
      return e[2]
    assert e[0] == 'randint' and (e[1], e[2] + 1) == (low, high), (e, low, high)
    return e[3]

  def standard_normal(self, shape, dtype=np.float64):
    del dtype
    value = self.normals.pop(0)
    assert value.shape == tuple(shape)
    return value


def summarise(ref, arrays):
  """Replays the fixtures through ours; prints what matches and by how much."""
  synthetic = Image.fromarray(arrays['synthetic'])
  cifar = Image.fromarray(arrays['cifar'])
  lines = []

  def same(case, got, stored):
    equal = digest(np.asarray(got)) == case['sha256']
    if case['stored'] is not None:
      equal &= np.array_equal(np.asarray(got), stored[case['stored']])
    return equal

  bad = 0
  for case in ref['ra_op_cases']:
    op = ours.OPS[case['op']]
    if case['resample'] is not None:
      got = op.fn(synthetic, *case['args'], fill=tuple(case['fill']),
                  resample=ours._INTERPOLATIONS[case['resample']])  # pylint: disable=protected-access
    else:
      got = op.fn(synthetic, *case['args'])
    bad += not same(case, got, arrays['ra_ops'])
  lines.append(f'RandAugment ops: {len(ref["ra_op_cases"]) - bad}/{len(ref["ra_op_cases"])} '
               'cases bit-exact vs timm')

  bad = 0
  for name, rows in ref['level_tables'].items():
    for level, negate, args in rows:
      bad += list(ours.level_to_arg(name, level, negate=negate)) != args
  bad_clamp = 0
  total_clamp = 0
  for config, table in ref['clamp_tables'].items():
    spec = ours.parse_rand_augment(config)
    call = table['draw']
    for index, raw, negate, args in table['rows']:
      single = dataclasses.replace(spec, num_layers=1)
      log = [['np_choice', len(spec.ops), 1, spec.choice_weights is None,
              None if spec.choice_weights is None else list(spec.choice_weights), [index]]]
      if spec.prob < 1.0:
        log.append(['random', 0.0])
      if call is not None:
        log.append(call + [raw])
      log.append(['random', 0.9 if negate else 0.1])
      log.append(['choice', 2, 0])
      draws = ours.sample_rand_augment(ReplayRng(log), single)
      total_clamp += 1
      bad_clamp += [list(d.args) for d in draws] != [args]
  lines.append(f'magnitude -> argument: level tables {"all equal" if not bad else f"{bad} differ"}; '
               f'noise/clamp tables {total_clamp - bad_clamp}/{total_clamp} equal')

  bad = 0
  for record, expected in zip(ref['ra_pipelines'], arrays['ra_pipelines']):
    spec = ours.parse_rand_augment(record['config'])
    rng = ReplayRng(record['log'])
    got = ours.rand_augment(cifar, rng, spec, fill=IMAGENET_FILL,
                            interpolation=record['interpolation'])
    bad += not np.array_equal(np.asarray(got), expected) or bool(rng.log)
  lines.append(f'RandAugment pipelines (timm draws replayed): '
               f'{len(ref["ra_pipelines"]) - bad}/{len(ref["ra_pipelines"])} bit-exact')

  bad = 0
  for case in ref['ta_op_cases']:
    got = ours.apply_trivial_augment_op(synthetic, case['op'], case['magnitude'],
                                        fill=tuple(case.get('fill') or (0, 0, 0)),
                                        interpolation=case.get('interpolation', 'nearest'))
    bad += not same(case, got, arrays['ta_ops'])
  bins_equal = all(
      [list(v) if v is not None else None, s] == ref['ta_bins'][str(n)][k]
      for n in (31, 11) for k, (v, s) in ours.trivial_augment_bins(n).items())
  for record, expected in zip(ref['ta_pipelines'], arrays['ta_pipelines']):
    rng = ReplayRng(record['log'])
    got = ours.trivial_augment_wide(cifar, rng, fill=tuple(record['fill'] or (0, 0, 0)))
    bad += not np.array_equal(np.asarray(got), expected)
  lines.append(f'TrivialAugmentWide: bins {"equal" if bins_equal else "DIFFER"}; ops and '
               f'pipelines {"all bit-exact" if not bad else f"{bad} differ"} vs torchvision')

  mean, std = IMAGENET_MEAN * 255, IMAGENET_STD * 255
  worst, boxes_equal = 0.0, True
  image = arrays['synthetic']
  for case in ref['erasing']:
    crops = [arrays[f'{case["key"]}_box{j}'] for j in range(len(case['boxes']))]
    boxes = ours.sample_erasing_boxes(
        ReplayRng(case['log']), *image.shape[:2], probability=case['probability'],
        min_area=case['min_area'], max_area=case['max_area'], min_aspect=case['min_aspect'],
        max_count=case['max_count'])
    boxes_equal &= [list(b) for b in boxes] == case['boxes']
    for box, crop in zip(case['boxes'], crops):
      out = image.copy()
      noise = None if case['mode'] == 'const' else crop.astype(np.float64)
      ours.erase_box(out, box, mode=case['mode'], mean=mean, std=std, noise=noise)
      t, l, h, w = box
      normalised = (out[t:t + h, l:l + w] - mean) / std
      crop = np.broadcast_to(crop, normalised.shape)
      inside = (crop > -mean / std) & (crop < (255 - mean) / std)  # No clipping.
      worst = max(worst, float(np.max(np.abs(normalised - crop) * inside)))
  z = np.random.default_rng(0).standard_normal((1_000_000, 3))
  quantised = np.clip(np.rint(mean + std * z), 0, 255)
  diff = np.abs((quantised - mean) / std - z)
  clipped = (mean + std * z < -0.5) | (mean + std * z > 255.5)
  const = np.abs((np.rint(mean) - mean) / std)
  lines.append(f'random erasing: boxes {"equal" if boxes_equal else "DIFFER"} given timm\'s draws; '
               f'uint8 fill vs timm, normalised units: const {const.max():.4f} max; '
               f'rand/pixel rounding {diff[~clipped].mean():.4f} mean, {diff[~clipped].max():.4f} max '
               f'(fixture boxes: {worst:.4f}); clipped {clipped.mean() * 100:.2f} % of draws, '
               f'off by {diff[clipped].mean():.3f} mean, {diff.max():.2f} max')
  return lines


# ----------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------


def bench(seconds=3.0):
  """Images/s of one plain loop, one core, on 224x224 images, ours vs timm/torchvision."""
  torch.set_num_threads(1)
  image = Image.fromarray(synthetic_image()).resize((224, 224), Image.Resampling.BICUBIC)
  array = np.asarray(image).copy()
  config = 'rand-m9-mstd0.5-inc1'
  spec = ours.parse_rand_augment(config)
  # Under Pillow 13 timm raises on 0-bit Posterize (PosterizeIncreasing at a
  # clamped magnitude of 10, about 1 image in 700 here): built with the
  # black-image substitute so that the loop runs.
  posterize_hits = []
  with black_posterize_zero(posterize_hits):
    timm_ra, _ = timm_rand_augment(config, 224)
  ta = tv_aa.TrivialAugmentWide()
  mean, std = IMAGENET_MEAN * 255, IMAGENET_STD * 255
  tensor = (torch.from_numpy(array).permute(2, 0, 1).float() / 255
            - torch.tensor(IMAGENET_MEAN).float()[:, None, None]) / torch.tensor(
                IMAGENET_STD).float()[:, None, None]
  timm_erase = {m: timm_re.RandomErasing(1.0, mode=m, device='cpu') for m in ('const', 'pixel')}
  rng = np.random.default_rng(0)
  random.seed(0)
  np.random.seed(0)
  torch.manual_seed(0)
  cases = [
      (f'rand_augment {config}', lambda: ours.rand_augment(image, rng, spec, fill=IMAGENET_FILL)),
      (f'timm rand_augment_transform {config}', lambda: timm_ra(image)),
      ('trivial_augment_wide', lambda: ours.trivial_augment_wide(image, rng)),
      ('torchvision TrivialAugmentWide', lambda: ta(image)),
  ]
  for mode in ('const', 'pixel'):
    cases.append((f'random_erasing p=1 {mode} (uint8 HWC)', lambda m=mode: ours.random_erasing(
        array, rng, probability=1.0, mode=m, mean=mean, std=std)))
    cases.append((f'timm RandomErasing p=1 {mode} (float CHW, in place)',
                   lambda m=mode: timm_erase[m](tensor)))
  results = []
  for name, fn in cases:
    for _ in range(50):  # Warm up (caches, lazy imports).
      fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      for _ in range(20):
        fn()
      count += 20
    rate = count / (time.perf_counter() - start)
    results.append((name, rate))
    print(f'  {name:62s} {rate:9.0f} images/s', flush=True)
  print(f'  (timm drew 0-bit Posterize {len(posterize_hits)} times: Pillow 13 would have raised)')
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='write the fixtures here (tests/fixtures/autoaugment)')
  parser.add_argument('--bench', action='store_true', help='time ours vs timm/torchvision')
  parser.add_argument('--seconds', type=float, default=3.0, help='per timed loop')
  args = parser.parse_args(argv)
  if not args.out and not args.bench:
    parser.error('give --out=DIR and/or --bench')
  print(f'timm {timm.__version__}, torchvision {torchvision.__version__}, torch {torch.__version__}, '
        f'Pillow {PIL.__version__}, numpy {np.__version__}')
  if args.out:
    synthetic = synthetic_image()
    cifar = cifar_image()
    cifar_source = f'{os.path.basename(CIFAR)}:{CIFAR_MEMBER}'
    if cifar is None:
      cifar, cifar_source = synthetic_image(32, 32, seed=1), 'synthetic (CIFAR copy absent)'
    ra_cases, ra_ops = ra_op_cases(synthetic)
    ra_ops = keep_one_per_op(ra_cases, ra_ops)
    ta_cases, ta_ops = ta_op_cases(synthetic)
    ta_ops = keep_one_per_op(ta_cases, ta_ops)
    posterize_hits = []
    ra_records, ra_outputs = ra_pipelines(cifar, posterize_hits=posterize_hits)
    ta_records, ta_outputs = ta_pipelines(cifar)
    erasing, crops = erasing_cases(synthetic)
    ref = dict(
        versions=dict(timm=timm.__version__, torchvision=torchvision.__version__,
                      torch=torch.__version__, pillow=PIL.__version__, numpy=np.__version__),
        cifar_source=cifar_source,
        # Pillow 13 refuses 0-bit posterize, so timm raises there; the recorded
        # pipelines substitute Pillow < 13's black image (`hits` times).
        timm_posterize_zero_raises=posterize_zero_bits_raises(),
        timm_posterize_zero_hits=len(posterize_hits),
        op_sets=dict(rand=list(timm_aa._RAND_TRANSFORMS),  # pylint: disable=protected-access
                     rand_increasing=list(timm_aa._RAND_INCREASING_TRANSFORMS),  # pylint: disable=protected-access
                     rand_3a=list(timm_aa._RAND_3A),  # pylint: disable=protected-access
                     weighted_3a=list(timm_aa._RAND_WEIGHTED_3A.items()),  # pylint: disable=protected-access
                     weighted_0=list(timm_aa._RAND_WEIGHTED_0.items())),  # pylint: disable=protected-access
        parses=timm_parses(),
        level_tables=level_tables(),
        clamp_tables=clamp_tables(),
        ra_op_cases=ra_cases,
        ta_op_cases=ta_cases,
        ta_bins=ta_bins(),
        ra_pipelines=ra_records,
        ta_pipelines=ta_records,
        erasing=erasing,
        statistics=[timm_statistics(c) for c in STATS_CONFIGS],
    )
    arrays = dict(synthetic=synthetic, cifar=cifar, ra_ops=ra_ops, ta_ops=ta_ops,
                  ra_pipelines=ra_outputs, ta_pipelines=np.stack(ta_outputs),
                  **{k: v.astype(np.float32) for k, v in crops.items()})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'reference.json'), 'w') as f:
      json.dump(ref, f, separators=(',', ':'))
    np.savez_compressed(os.path.join(args.out, 'reference.npz'), **arrays)
    sizes = {n: os.path.getsize(os.path.join(args.out, n)) for n in ('reference.json', 'reference.npz')}
    print(f'wrote {args.out}: ' + ', '.join(f'{n} {s / 1024:.0f} KiB' for n, s in sizes.items()))
    print('parity summary:')
    for line in summarise(ref, arrays):
      print('  ' + line)
  if args.bench:
    print('one core, 224x224, steady state:')
    bench(args.seconds)


if __name__ == '__main__':
  main()
