r"""Pretrained-weight parity: every torchvision / timm ResNet we import, against PyTorch.

For each architecture: the PyTorch model's state-dict key table must equal the
one `resnet_jax.weights` derives from our model (names, shapes, order); seeded
random weights (BatchNorm running statistics randomised too, so that they
matter) are loaded into PyTorch and imported into ours; the eval-mode logits
of both on the same images must agree within 1e-5 relative (max |diff| /
max |logit|); then our variables are exported to a .safetensors file, loaded
back into the PyTorch model (every tensor first set to NaN) with
`load_state_dict(strict=True)`, and its logits must equal the first ones
exactly. The CIFAR ResNets are checked the same way against the independent
PyTorch implementation in experiments/torch_parity.py. For timm, the
stochastic-depth rate of every block (timm built with drop_path_rate=0.2) must
equal ours (ResNetSpec.drop_path_rates) exactly.

Part 'preprocess' compares our PIL transforms (resnet_jax.data.transforms)
with torchvision's on the same JPEGs, in uint8 levels: `Resize(256 or 232) +
CenterCrop(224)` (evaluation) and `resized_crop` of the boxes our
RandomResizedCrop draws (training); it also writes
tests/fixtures/transforms/torchvision.npz for the tests.

Part 'fixtures' writes what tests/test_weights.py checks without PyTorch:
tests/fixtures/weights/key_tables.json.xz (every architecture's key table) and
logits.json (PyTorch's logits of a few small architectures at 72x72 for the
seed-0 weights of resnet_jax.weights.synthetic).

Needs torch, torchvision, timm, safetensors, pillow (never the package's own
dependencies; REFERENCE.md says how they install here; benchmarks/peer/setup.sh
makes such a venv, with jax, in benchmarks/peer/.venv):

    nice benchmarks/peer/.venv/bin/python experiments/pretrained_parity.py \
        --out=experiments/results/pretrained_parity.md
    benchmarks/peer/.venv/bin/python experiments/pretrained_parity.py --part=fixtures
    benchmarks/peer/.venv/bin/python experiments/pretrained_parity.py --part=weights \
        --only='timm/resnetrs*,timm/se*' --size=224 --batch=2

Exits 1 when any check fails.
"""

import argparse
import fnmatch
import glob
import io
import json
import lzma
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'weights')
TOLERANCE = 1e-5  # max |ours - torch| / max |torch| on the logits.
CIFAR_ARCHS = [('cifar_resnet20', 'A'), ('cifar_resnet20', 'B'), ('cifar_resnet20', 'C'),
               ('cifar_resnet20', 'none'), ('cifar_resnet56', 'A'), ('cifar_resnet110', 'B')]
# The small architectures whose logits the test suite checks (72x72: odd sizes
# in stages 3 and 4 exercise the pools' padding and ceil_mode).
FIXTURE_ARCHS = [('torchvision', 'resnet18', None), ('timm', 'resnet50d', None),
                 ('torchvision', 'resnext50_32x4d', None), ('timm', 'resnet18d', None),
                 ('timm', 'resnet50_gn', None), ('torch_cifar', 'cifar_resnet20', 'A'),
                 ('torch_cifar', 'cifar_resnet20', 'B'), ('timm', 'seresnet18', None),
                 ('timm', 'resnetrs50', None)]
DROP_PATH_RATE = 0.2  # For comparing each block's stochastic-depth rate with timm's.
FIXTURE_SIZE, FIXTURE_CLASSES, FIXTURE_BATCH = 72, 10, 2


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  if not hasattr(_torch, 'lib'):
    # torchvision's C ops are missing from this CPU build; declaring them is
    # enough for the models (REFERENCE.md section 1).
    try:
      _torch.lib = torch.library.Library('torchvision', 'DEF')
      _torch.lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
      _torch.lib.define('qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor')
    except RuntimeError:  # A full torchvision build defines them itself.
      _torch.lib = None
  return torch


def torch_model(source: str, arch: str, num_classes: int, shortcut: str | None = None,
                **timm_args):
  """The PyTorch model, in eval mode."""
  torch = _torch()
  if source == 'torchvision':
    import torchvision  # pylint: disable=g-import-not-at-top
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
  elif source == 'timm':
    import timm  # pylint: disable=g-import-not-at-top
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **timm_args)
  else:
    sys.path.insert(0, os.path.join(REPO, 'experiments'))
    import torch_parity  # pylint: disable=g-import-not-at-top
    from resnet_jax import models  # pylint: disable=g-import-not-at-top
    from resnet_jax import weights  # pylint: disable=g-import-not-at-top
    spec = models.resolve_spec(weights.model_config(arch, source, shortcut=shortcut))
    model = torch_parity.torch_resnet(spec, num_classes)
  del torch
  return model.eval()


def all_archs():
  from resnet_jax import weights  # pylint: disable=g-import-not-at-top
  out = [(s, a, None) for s in ('torchvision', 'timm') for a in weights.ARCHS[s]]
  return out + [('torch_cifar', a, sc) for a, sc in CIFAR_ARCHS]


def label(source, arch, shortcut):
  return f'{source}/{arch}' + (f'[{shortcut}]' if shortcut else '')


def our_logits(model, variables, images_nhwc):
  import jax  # pylint: disable=g-import-not-at-top
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return np.asarray(apply(variables, images_nhwc))


def drop_path_rates_equal(arch) -> bool:
  """Whether timm's per-block drop-path rates equal ours, exactly, at DROP_PATH_RATE."""
  torch = _torch()
  from resnet_jax import models  # pylint: disable=g-import-not-at-top
  from resnet_jax import weights  # pylint: disable=g-import-not-at-top
  with torch.device('meta'):
    net = torch_model('timm', arch, 1000, drop_path_rate=DROP_PATH_RATE)
  theirs = [0.0 if b.drop_path is None else float(b.drop_path.drop_prob)
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
  spec = models.resolve_spec({**weights.model_config(arch, 'timm'),
                              'drop_path_rate': DROP_PATH_RATE})
  ours = [r for stage in spec.drop_path_rates() for r in stage]
  return theirs == ours


def check_arch(source, arch, shortcut, size, batch, num_classes=1000, seed=0):
  """Runs every check on one architecture; returns a result row."""
  torch = _torch()
  from safetensors import torch as st_torch  # pylint: disable=g-import-not-at-top
  from resnet_jax import weights  # pylint: disable=g-import-not-at-top
  from resnet_jax.weights import files  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  net = torch_model(source, arch, num_classes, shortcut)
  reference = {k: tuple(v.shape) for k, v in net.state_dict().items()}
  ours_table = weights.key_table(arch, source, num_classes=num_classes, shortcut=shortcut)
  table_ok = list(reference.items()) == list(ours_table.items())
  state_dict = weights.random_state_dict(reference, seed)
  net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
  images = weights.synthetic.random_images(batch, size, seed)
  with torch.no_grad():
    ref = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  model, variables = weights.from_state_dict(
      state_dict, arch, source, shortcut=shortcut if shortcut == 'none' else None)
  ours = our_logits(model, variables, images)
  scale = float(np.abs(ref).max())
  rel = float(np.abs(ours - ref).max()) / scale
  exported = weights.to_state_dict(variables, arch, source)
  bitwise = list(exported) == list(state_dict) and all(
      exported[k].dtype == state_dict[k].dtype and np.array_equal(exported[k], state_dict[k])
      for k in state_dict)
  description = model.spec.describe()
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'exported.safetensors')
    files.save_state_dict(exported, path)
    from_file = files.load_state_dict(path)
    bitwise = bitwise and set(from_file) == set(exported) and all(
        v.dtype == exported[k].dtype and v.shape == exported[k].shape
        and np.array_equal(v, exported[k]) for k, v in from_file.items())
    # The largest models hold ~2 GB per copy.
    del exported, variables, state_dict, from_file
    with torch.no_grad():
      for v in net.state_dict().values():
        if v.is_floating_point():
          v.fill_(float('nan'))
    net.load_state_dict(st_torch.load_file(path), strict=True)
    with torch.no_grad():
      reloaded = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  reload_diff = float(np.abs(reloaded - ref).max())
  params = sum(int(np.prod(shape)) for k, shape in reference.items()
               if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked')))
  drop_path_ok = drop_path_rates_equal(arch) if source == 'timm' else None
  ok = (table_ok and rel <= TOLERANCE and bitwise and reload_diff == 0.0
        and drop_path_ok is not False)
  return {'arch': label(source, arch, shortcut), 'model': description,
          'tensors': len(reference), 'params': params, 'table_ok': table_ok,
          'max_abs_logit': scale, 'max_rel_err': rel, 'export_bitwise': bitwise,
          'reload_max_abs_diff': reload_diff, 'drop_path_ok': drop_path_ok, 'ok': ok,
          'seconds': time.perf_counter() - start}


def _drop_path_cell(ok: bool | None) -> str:
  return '–' if ok is None else 'equal' if ok else 'DIFFERS'


def part_weights(args) -> tuple[list[dict], bool]:
  selected = [a for a in all_archs() if not args.only or any(
      fnmatch.fnmatch(label(*a), pat) for pat in args.only.split(','))]
  rows = []
  for source, arch, shortcut in selected:
    size = args.size if source != 'torch_cifar' else 32
    classes = 1000 if source != 'torch_cifar' else 10
    row = check_arch(source, arch, shortcut, size, args.batch, classes)
    row['size'] = size
    rows.append(row)
    print(f"{row['arch']:34s} {row['tensors']:5d} tensors {row['params']:>12,d} params  "
          f"rel err {row['max_rel_err']:.2e}  table {'ok' if row['table_ok'] else 'DIFFERS'}  "
          f"export {'bitwise' if row['export_bitwise'] else 'DIFFERS'}  "
          f"reload diff {row['reload_max_abs_diff']:.1e}  "
          f"drop path {_drop_path_cell(row['drop_path_ok'])}  {row['seconds']:.0f}s  "
          f"{'OK' if row['ok'] else 'FAIL'}", flush=True)
  return rows, all(r['ok'] for r in rows)


# --- Preprocessing --------------------------------------------------------------


def _cifar_upsampled(count: int) -> list[tuple[str, bytes]]:
  """CIFAR-10 JPEGs upsampled to ImageNet-like sizes (bicubic), re-encoded as JPEG q90."""
  import tarfile  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  archive = os.path.join(REPO, '..', 'shared', 'data', 'cifar10-jpeg-q75.tar.gz')
  if not os.path.exists(archive):
    return []
  sizes = [(500, 375), (375, 500), (500, 333), (640, 480), (333, 500), (500, 500),
           (1024, 683), (257, 300)]
  out = []
  with tarfile.open(archive) as tar:
    members = sorted((m for m in tar if m.name.endswith('.jpg') and '/test/' in '/' + m.name),
                     key=lambda m: m.name)
    members = members[::max(1, len(members) // count)][:count]  # Across the classes.
    for i, m in enumerate(members):
      image = Image.open(io.BytesIO(tar.extractfile(m).read())).convert('RGB')
      w, h = sizes[i % len(sizes)]
      buf = io.BytesIO()
      image.resize((w, h), Image.BICUBIC).save(buf, format='JPEG', quality=90)
      out.append((f'cifar-{m.name.split("/")[-2]}-{w}x{h}', buf.getvalue()))
  return out


def _digest(image: np.ndarray) -> np.ndarray:
  """SHA-256 of a uint8 image's bytes, as an array (a fixture of 32 bytes, not 150 KB)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  return np.frombuffer(hashlib.sha256(image.astype(np.uint8).tobytes()).digest(), np.uint8)


def part_preprocess(args) -> list[dict]:
  """Our PIL transforms (resnet_jax.data.transforms) against torchvision's, image by image.

  Also writes tests/fixtures/transforms/torchvision.npz: two JPEGs and the
  SHA-256 of what torchvision makes of them (with the crop boxes), which
  tests/test_data.py compares with ours, bit for bit, without torch.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  _torch()
  from torchvision import transforms  # pylint: disable=g-import-not-at-top
  from torchvision.transforms import functional as F  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import transforms as ours  # pylint: disable=g-import-not-at-top
  photos = []
  for pattern in args.photos.split(','):
    for path in sorted(glob.glob(os.path.expanduser(pattern))):
      with open(path, 'rb') as f:
        photos.append((os.path.basename(path), f.read()))
  images = [('photo', n, b) for n, b in photos] + [
      ('cifar-upsampled', n, b) for n, b in _cifar_upsampled(args.cifar_images)]
  rng = np.random.default_rng(0)
  rows, fixture = [], {}
  # The fixture keeps the two smallest files (it travels with the tests).
  small = sorted(range(len(images)), key=lambda i: len(images[i][2]))[:2]
  for i, (kind, name, data) in enumerate(images):
    pil = Image.open(io.BytesIO(data)).convert('RGB')
    row = {'kind': kind, 'image': name, 'size': f'{pil.width}x{pil.height}'}
    for resize in (256, 232):
      ref = np.asarray(transforms.Compose([transforms.Resize(resize),
                                           transforms.CenterCrop(224)])(pil)).astype(int)
      got = ours.eval_image(ours.decode(data), 224, resize).astype(int)
      row[f'eval{resize}_max'] = int(np.abs(got - ref).max())
      if i in small:
        fixture[f'eval{resize}_{small.index(i)}'] = _digest(ref)
    # Training crops: torchvision's resized_crop of the same boxes ours draws.
    worst = 0
    for k in range(8):
      box = ours.random_resized_crop_box(pil.width, pil.height, rng)
      ref = np.asarray(F.resized_crop(pil, *box, [224, 224], antialias=True)).astype(int)
      got = np.asarray(ours.resized_crop(ours.decode(data), box, 224)).astype(int)
      worst = max(worst, int(np.abs(got - ref).max()))
      if i in small and k < 2:
        fixture[f'crop_{small.index(i)}_{k}'] = _digest(ref)
        fixture[f'crop_box_{small.index(i)}_{k}'] = np.array(box)
    row['crop_max'] = worst
    tf_ref = np.asarray(transforms.Compose([transforms.Resize(256),
                                            transforms.CenterCrop(224)])(pil)).astype(int)
    row['crop_resize_mean'] = float(np.abs(ours.eval_image(ours.decode(data), 224, 0)
                                           .astype(int) - tf_ref).mean())
    if i in small:
      fixture[f'jpeg_{small.index(i)}'] = np.frombuffer(data, np.uint8)
    rows.append(row)
    print(f"{name:32s} {row['size']:>9s}  eval 256 max {row['eval256_max']} | eval 232 max "
          f"{row['eval232_max']} | crops max {row['crop_max']} | eval_resize=0 mean "
          f"{row['crop_resize_mean']:.2f}", flush=True)
  out = os.path.join(REPO, 'tests', 'fixtures', 'transforms')
  os.makedirs(out, exist_ok=True)
  np.savez_compressed(os.path.join(out, 'torchvision.npz'), **fixture)
  return rows


# --- Fixtures -------------------------------------------------------------------


def part_fixtures(args) -> None:
  torch = _torch()
  from resnet_jax import weights  # pylint: disable=g-import-not-at-top
  os.makedirs(FIXTURES, exist_ok=True)
  tables, archs = {}, {}
  for source, arch, shortcut in all_archs():
    classes = 1000 if source != 'torch_cifar' else 10
    with torch.device('meta'):
      net = torch_model(source, arch, classes, shortcut)
    rows = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    text = json.dumps(rows)
    table_id = next((i for i, t in tables.items() if t == text), None)
    if table_id is None:
      table_id = f't{len(tables)}'
      tables[table_id] = text
    archs[label(source, arch, shortcut)] = {'table': table_id, 'num_classes': classes}
  text = json.dumps({'archs': archs, 'tables': {i: json.loads(t) for i, t in tables.items()},
                     'torch': torch.__version__}, separators=(',', ':'))
  # xz, not gzip: its window spans whole tables, and the deep networks' tables
  # repeat each other. The same tables give the same bytes (no timestamp).
  with lzma.open(os.path.join(FIXTURES, 'key_tables.json.xz'), 'wb',
                 preset=9 | lzma.PRESET_EXTREME) as f:
    f.write(text.encode('utf-8'))
  logits = {}
  images = weights.synthetic.random_images(FIXTURE_BATCH, FIXTURE_SIZE, 0)
  for source, arch, shortcut in FIXTURE_ARCHS:
    net = torch_model(source, arch, FIXTURE_CLASSES, shortcut)
    sd = weights.random_state_dict({k: tuple(v.shape) for k, v in net.state_dict().items()}, 0)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    x = images if source != 'torch_cifar' else weights.synthetic.random_images(
        FIXTURE_BATCH, 32, 0)
    with torch.no_grad():
      out = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    logits[label(source, arch, shortcut)] = {
        'size': int(x.shape[1]), 'logits': [[float(v) for v in row] for row in out]}
  import timm  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  with open(os.path.join(FIXTURES, 'logits.json'), 'w', encoding='utf-8') as f:
    json.dump({'seed': 0, 'batch': FIXTURE_BATCH, 'num_classes': FIXTURE_CLASSES,
               'torch': torch.__version__, 'torchvision': torchvision.__version__,
               'timm': timm.__version__, 'archs': logits}, f, indent=1)
    f.write('\n')
  sizes = {n: os.path.getsize(os.path.join(FIXTURES, n)) for n in os.listdir(FIXTURES)}
  print(f'wrote {FIXTURES}: {sizes} ({len(archs)} architectures, {len(tables)} distinct '
        f'tables)')


# --- Report -----------------------------------------------------------------------


def write_report(path, weight_rows, preprocess_rows, args, versions) -> None:
  lines = ['# Pretrained-weight parity (experiments/pretrained_parity.py)', '',
           f'Run: `{" ".join(sys.argv)}` ({time.strftime("%Y-%m-%d")}; {versions}).', '']
  if weight_rows:
    worst = max(weight_rows, key=lambda r: r['max_rel_err'])
    lines += [
        f'Seeded random weights (seed 0; BatchNorm running statistics random) in PyTorch, '
        f'imported; eval-mode logits of {args.batch} random images at {args.size}x{args.size} '
        '(CIFAR: 32x32), float32 on CPU. "rel err" = max |ours - PyTorch| / max |PyTorch|; '
        f'tolerance {TOLERANCE:g}. "export" = to_state_dict gives back every tensor bit for '
        'bit (names, order, dtypes, shapes, values), also after the trip through the '
        '.safetensors file; "reload" = max |diff| of PyTorch\'s logits after loading our exported '
        '.safetensors with load_state_dict(strict=True) into the model with every tensor '
        'set to NaN first; "drop path" = every block\'s stochastic-depth rate equals '
        f'timm\'s (drop_path_rate={DROP_PATH_RATE:g}), exactly (timm only).', '',
        f'**{sum(r["ok"] for r in weight_rows)} of {len(weight_rows)} architectures pass**; '
        f'largest error {worst["max_rel_err"]:.2e} ({worst["arch"]}).', '',
        '| architecture | our model | tensors | params | key table | max abs logit | rel err '
        '| export | reload | drop path | s |', '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in weight_rows:
      lines.append(
          f"| {r['arch']} | {r['model']} | {r['tensors']} | {r['params']:,} | "
          f"{'equal' if r['table_ok'] else 'DIFFERS'} | {r['max_abs_logit']:.3g} | "
          f"{r['max_rel_err']:.2e} | {'bitwise' if r['export_bitwise'] else 'DIFFERS'} | "
          f"{r['reload_max_abs_diff']:.1e} | {_drop_path_cell(r['drop_path_ok'])} | "
          f"{r['seconds']:.0f} |")
    lines.append('')
  if preprocess_rows:
    lines += [
        '## Transforms: ours (`resnet_jax.data.transforms`, PIL) vs torchvision', '',
        'Reference: PIL decode + torchvision `Resize(N) + CenterCrop(224)` (its ImageNet '
        'evaluation, N = 256 for V1 weights, 232 for V2) and `F.resized_crop(box, 224)` of '
        'the boxes our RandomResizedCrop draws (8 per image). Differences in uint8 levels '
        'over the 224x224x3 output. "eval_resize=0" is our other eval transform (centre '
        '224/256 crop, then resize; the TF ResNet reference) against the N = 256 reference, '
        'for scale.', '',
        '| image | size | eval 256 max | eval 232 max | crops max | eval_resize=0 mean |',
        '|---|---|---|---|---|---|']
    for r in preprocess_rows:
      lines.append(f"| {r['image']} | {r['size']} | {r['eval256_max']} | "
                   f"{r['eval232_max']} | {r['crop_max']} | {r['crop_resize_mean']:.2f} |")
    worst = max(max(r['eval256_max'], r['eval232_max'], r['crop_max']) for r in preprocess_rows)
    lines += ['', f'Over {len(preprocess_rows)} images the largest difference is {worst} '
              'level(s).', '']
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  print(f'wrote {path}')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--part', default='all',
                      choices=['all', 'weights', 'preprocess', 'fixtures'])
  parser.add_argument('--only', default='', help="comma-separated globs, e.g. 'timm/*d'")
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--photos', default=os.path.join(
      REPO, '.venv', 'lib', 'python3*', 'site-packages', 'matplotlib', 'mpl-data',
      'sample_data', 'grace_hopper.jpg'), help='comma-separated globs of real photos')
  parser.add_argument('--cifar_images', type=int, default=24,
                      help='CIFAR-10 test JPEGs upsampled to ImageNet-like sizes')
  parser.add_argument('--out', default='', help='Markdown report to write')
  args = parser.parse_args()
  torch = _torch()
  torch.set_num_threads(os.cpu_count() or 1)
  import jax  # pylint: disable=g-import-not-at-top
  import timm  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  versions = (f'torch {torch.__version__}, torchvision {torchvision.__version__}, timm '
              f'{timm.__version__}, jax {jax.__version__}')
  if args.part == 'fixtures':
    part_fixtures(args)
    return 0
  weight_rows, ok = ([], True)
  if args.part in ('all', 'weights'):
    weight_rows, ok = part_weights(args)
  preprocess_rows = part_preprocess(args) if args.part in ('all', 'preprocess') else []
  if args.out:
    write_report(args.out, weight_rows, preprocess_rows, args, versions)

  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main())
