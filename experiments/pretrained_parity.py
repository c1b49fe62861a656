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
PyTorch implementation in experiments/torch_parity.py.

Part 'preprocess' compares our tf.data eval transform (eval_resize=256) with
torchvision's own `Resize(256) + CenterCrop(224)` on PIL images, in uint8
levels: from the JPEG bytes, and from the same decoded pixels.

Part 'fixtures' writes what tests/test_weights.py checks without PyTorch:
tests/fixtures/weights/key_tables.json.gz (every architecture's key table) and
logits.json (PyTorch's logits of a few small architectures at 72x72 for the
seed-0 weights of resnet_jax.weights.synthetic).

Needs torch, torchvision, timm, safetensors, pillow (never the package's own
dependencies; REFERENCE.md says how they install here):

    nice /work/venv-torch/bin/python experiments/pretrained_parity.py \
        --out=experiments/results/pretrained_parity.md
    /work/venv-torch/bin/python experiments/pretrained_parity.py --part=fixtures
    /work/venv-torch/bin/python experiments/pretrained_parity.py --part=weights \
        --only='timm/resnet50d,torchvision/resnet18' --size=224 --batch=2

Exits 1 when any check fails.
"""

import argparse
import fnmatch
import glob
import gzip
import io
import json
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
                 ('torch_cifar', 'cifar_resnet20', 'B')]
FIXTURE_SIZE, FIXTURE_CLASSES, FIXTURE_BATCH = 72, 10, 2


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  if not hasattr(_torch, 'lib'):
    # torchvision's C ops are missing from this CPU build; declaring them is
    # enough for the models (REFERENCE.md section 1).
    _torch.lib = torch.library.Library('torchvision', 'DEF')
    _torch.lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _torch.lib.define('qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor')
  return torch


def torch_model(source: str, arch: str, num_classes: int, shortcut: str | None = None):
  """The PyTorch model, in eval mode."""
  torch = _torch()
  if source == 'torchvision':
    import torchvision  # pylint: disable=g-import-not-at-top
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
  elif source == 'timm':
    import timm  # pylint: disable=g-import-not-at-top
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
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
  ok = table_ok and rel <= TOLERANCE and bitwise and reload_diff == 0.0
  return {'arch': label(source, arch, shortcut), 'model': description,
          'tensors': len(reference), 'params': params, 'table_ok': table_ok,
          'max_abs_logit': scale, 'max_rel_err': rel, 'export_bitwise': bitwise,
          'reload_max_abs_diff': reload_diff, 'ok': ok,
          'seconds': time.perf_counter() - start}


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
          f"reload diff {row['reload_max_abs_diff']:.1e}  {row['seconds']:.0f}s  "
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


def part_preprocess(args) -> list[dict]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  _torch()
  from torchvision import transforms  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import tf_augment  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  photos = []
  for pattern in args.photos.split(','):
    for path in sorted(glob.glob(os.path.expanduser(pattern))):
      with open(path, 'rb') as f:
        photos.append((os.path.basename(path), f.read()))
  images = [('photo', n, b) for n, b in photos] + [
      ('cifar-upsampled', n, b) for n, b in _cifar_upsampled(args.cifar_images)]
  reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
  rows = []
  for kind, name, data in images:
    pil = Image.open(io.BytesIO(data)).convert('RGB')
    pil_decoded = np.asarray(pil)
    ref = np.asarray(reference(pil)).astype(np.int32)
    tf_decoded = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    ours = tf_augment.torchvision_eval(tf.constant(data), 224).numpy().astype(np.int32)
    # The transform alone: PIL's decoded pixels, losslessly re-encoded.
    png = io.BytesIO()
    Image.fromarray(pil_decoded).save(png, format='PNG')
    ours_same_pixels = tf_augment.torchvision_eval(
        tf.constant(png.getvalue()), 224).numpy().astype(np.int32)
    crop_resize = tf_augment.imagenet_eval(tf.constant(data), 224, True).numpy().astype(
        np.int32)
    decode_diff = np.abs(tf_decoded.astype(np.int32) - pil_decoded.astype(np.int32))
    rows.append({
        'kind': kind, 'image': name, 'size': f'{pil.width}x{pil.height}',
        'decode_max': int(decode_diff.max()), 'decode_mean': float(decode_diff.mean()),
        'transform_max': int(np.abs(ours_same_pixels - ref).max()),
        'transform_mean': float(np.abs(ours_same_pixels - ref).mean()),
        'both_max': int(np.abs(ours - ref).max()),
        'both_mean': float(np.abs(ours - ref).mean()),
        'both_frac_differing': float(np.mean(ours != ref)),
        'crop_resize_mean': float(np.abs(crop_resize - ref).mean()),
        'crop_resize_max': int(np.abs(crop_resize - ref).max()),
    })
    r = rows[-1]
    print(f"{name:32s} {r['size']:>9s}  ours max {r['both_max']} mean {r['both_mean']:.4f} "
          f"({100 * r['both_frac_differing']:.2f}% of values differ) | on PIL pixels max "
          f"{r['transform_max']} | TF default decode max {r['decode_max']} mean "
          f"{r['decode_mean']:.3f} | eval_resize=0 mean {r['crop_resize_mean']:.2f}", flush=True)
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
  # mtime=0: the same tables give the same bytes (no spurious diffs).
  with gzip.GzipFile(os.path.join(FIXTURES, 'key_tables.json.gz'), 'wb', mtime=0) as f:
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
        'set to NaN first.', '',
        f'**{sum(r["ok"] for r in weight_rows)} of {len(weight_rows)} architectures pass**; '
        f'largest error {worst["max_rel_err"]:.2e} ({worst["arch"]}).', '',
        '| architecture | our model | tensors | params | key table | max abs logit | rel err '
        '| export | reload | s |', '|---|---|---|---|---|---|---|---|---|---|']
    for r in weight_rows:
      lines.append(
          f"| {r['arch']} | {r['model']} | {r['tensors']} | {r['params']:,} | "
          f"{'equal' if r['table_ok'] else 'DIFFERS'} | {r['max_abs_logit']:.3g} | "
          f"{r['max_rel_err']:.2e} | {'bitwise' if r['export_bitwise'] else 'DIFFERS'} | "
          f"{r['reload_max_abs_diff']:.1e} | {r['seconds']:.0f} |")
    lines.append('')
  if preprocess_rows:
    lines += [
        '## Eval transform: ours (`eval_resize=256`, tf.data) vs torchvision',
        '', 'Reference: PIL decode + `transforms.Resize(256)` + `CenterCrop(224)` '
        '(torchvision\'s ImageNet evaluation). Differences in uint8 levels over the '
        '224x224x3 output. "ours" is `tf_augment.torchvision_eval` from the JPEG bytes; '
        '"ours, PIL pixels" the same on PIL\'s decoded pixels (losslessly re-encoded), '
        'so decoding is out. For scale: "TF default decode" compares '
        '`tf.io.decode_image` (libjpeg\'s fast DCT; what the training path and '
        'eval_resize=0 use) with PIL\'s decode of the full image, and "eval_resize=0" '
        'is our default eval transform (centre 224/256 crop, then resize) against the '
        'same reference.', '',
        '| image | size | ours max / mean | values differing | ours, PIL pixels max / mean '
        '| TF default decode max / mean | eval_resize=0 max / mean |',
        '|---|---|---|---|---|---|---|']
    for r in preprocess_rows:
      lines.append(
          f"| {r['image']} | {r['size']} | {r['both_max']} / {r['both_mean']:.4f} | "
          f"{100 * r['both_frac_differing']:.2f} % | {r['transform_max']} / "
          f"{r['transform_mean']:.4f} | {r['decode_max']} / {r['decode_mean']:.3f} | "
          f"{r['crop_resize_max']} / {r['crop_resize_mean']:.2f} |")
    agg = lambda k, f: f(r[k] for r in preprocess_rows)
    lines += ['', f"Over {len(preprocess_rows)} images, ours vs torchvision: max "
              f"{agg('both_max', max)} level, mean "
              f"{np.mean([r['both_mean'] for r in preprocess_rows]):.4f} levels, "
              f"{100 * np.mean([r['both_frac_differing'] for r in preprocess_rows]):.2f} % "
              'of the values differ (by 1).', '']
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
