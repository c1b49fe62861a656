r"""Intermediate features against timm's `features_only` models, and the default pass kept.

Part 'timm' (needs torch and timm: benchmarks/peer/.venv): for every timm
architecture that `resnet_jax.weights` imports, seeded random weights
(`weights.synthetic`, BatchNorm statistics randomised so that they matter) are
loaded into timm's `features_only=True` model and imported into ours; on the
same images, every feature map of ours (`model.apply(..., features=True)`)
must equal timm's within 1e-5 relative (max |ours - timm| / max |timm|), and
`models.feature_info(spec)` must equal timm's `feature_info.get_dicts()`.
Writes a Markdown table (--out) and, with --fixtures, what
tests/test_features.py checks without torch: tests/fixtures/features/timm.json
(each checked architecture's feature_info) and timm.npz (a fixed subsample of
timm's feature values, for a few small architectures).

Part 'forward' records what the default forward pass computed before
`features=` existed, for tests/test_features.py to show it is unchanged: for a
few small architectures, the SHA-256 of the variable tree (paths, shapes) and
of the eval and train forward passes' jaxprs, and the float32 logits (bytes)
of seeded weights and images. Run it on the code of the commit before the change:

    mkdir /tmp/before && git archive <commit> resnet_jax | tar -x -C /tmp/before
    .venv/bin/python experiments/features_parity.py --part=forward --code=/tmp/before

(the fixture was recorded on 397d6be, the commit before `features=`).

    nice benchmarks/peer/.venv/bin/python experiments/features_parity.py --part=timm \
        --out=experiments/results/features_parity.md --fixtures

Exits 1 when any check fails.
"""

import argparse
import fnmatch
import hashlib
import json
import os
import sys
import time
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'features')
TOLERANCE = 1e-5  # max |ours - timm| / max |timm| per feature map.
SIZE, BATCH, CLASSES = 72, 2, 10  # 72: odd sides in the last stages (pool padding, ceil).
# The architectures whose timm features the test suite checks (small, and one
# of each stem: 7x7, deep, deep with the conv pool).
FIXTURE_ARCHS = ('resnet18', 'resnet18d', 'seresnet18', 'resnetrs50')
FIXTURE_SAMPLES = 96  # Values kept per feature map (evenly spaced in NHWC order).
# Part 'forward': (label, model config, image side).
FORWARD_ARCHS = (
    ('cifar8_A', {'family': 'cifar', 'depth': 8, 'shortcut': 'A'}, 16),
    ('cifar8_preact_B', {'family': 'cifar', 'depth': 8, 'shortcut': 'B', 'preact': True}, 16),
    ('resnet18_B', {'name': 'resnet18', 'shortcut': 'B'}, 32),
    ('preact_resnet18_B', {'name': 'preact_resnet18', 'shortcut': 'B'}, 32),
    ('resnet50d', {'name': 'resnet50', 'stem': 'deep', 'shortcut': 'D'}, 32),
    ('resnetrs50', {'name': 'resnetrs50', 'shortcut': 'D'}, 32),
    ('resnet18_gn', {'name': 'resnet18', 'shortcut': 'B', 'norm': 'group',
                     'num_groups': 8}, 32),
)


def sample_indices(size: int, n: int = FIXTURE_SAMPLES) -> np.ndarray:
  """Evenly spaced flat indices into an array of `size` elements (the fixtures' subsample)."""
  return np.unique(np.linspace(0, size - 1, min(n, size)).round().astype(np.int64))


# --- Part 'forward' ---------------------------------------------------------------


def seeded_variables(model, size: int):
  """Variables of the model's shapes drawn with numpy from a seed (per path).

  Machine-independent and quick (no init computation): He-scaled kernels,
  norm scales in [0.2, 1], small biases, and random BatchNorm statistics so
  that they matter.
  """
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                          jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  flat = {}
  for path, leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes)).items():
    rng = np.random.default_rng([0, zlib.crc32('/'.join(path).encode())])
    kind = path[-1]
    if kind == 'kernel':
      x = rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
    elif kind == 'scale':
      x = rng.uniform(0.2, 1.0, leaf.shape)
    elif kind in ('bias', 'mean'):
      x = rng.normal(0.0, 0.1 if kind == 'bias' else 0.2, leaf.shape)
    else:  # 'var'
      x = rng.uniform(0.5, 2.0, leaf.shape)
    flat[path] = x.astype(np.float32)
  return flax.traverse_util.unflatten_dict(flat)


def forward_inputs(config: dict, size: int):
  """(model, seeded variables, seeded images) of one 'forward' architecture."""
  from resnet_jax import models  # pylint: disable=g-import-not-at-top
  model = models.create_model(config, num_classes=CLASSES)
  images = np.random.default_rng([0, 1]).normal(0, 1, (BATCH, size, size, 3)).astype(
      np.float32)
  return model, seeded_variables(model, size), images


def forward_record(config: dict, size: int) -> dict:
  """Parameter tree, jaxpr digests and logits of the default forward pass."""
  import jax  # pylint: disable=g-import-not-at-top
  model, variables, images = forward_inputs(config, size)
  evaluate = lambda v, x: model.apply(v, x, train=False)
  train = lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'])
  digest = lambda f: hashlib.sha256(str(jax.make_jaxpr(f)(variables, images)).encode()
                                    ).hexdigest()
  logits = np.asarray(jax.jit(evaluate)(variables, images), np.float32)
  return {
      'config': config, 'size': size, 'num_variables': len(variable_tree(variables).splitlines()),
      'variables_sha256': hashlib.sha256(variable_tree(variables).encode()).hexdigest(),
      'eval_jaxpr_sha256': digest(evaluate), 'train_jaxpr_sha256': digest(train),
      'logits_hex': logits.tobytes().hex(),
  }


def variable_tree(variables) -> str:
  """'collection/path/leaf shape' per variable, sorted, one a line (what is digested)."""
  import flax  # pylint: disable=g-import-not-at-top
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  return '\n'.join(sorted(f"{'/'.join(p)} {tuple(np.shape(v))}" for p, v in flat.items()))


def part_forward(args) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  from resnet_jax import models  # pylint: disable=g-import-not-at-top
  print(f'resnet_jax from {os.path.dirname(models.__file__)}', file=sys.stderr)
  out = {'jax': jax.__version__, 'backend': jax.default_backend(), 'archs': {}}
  for label, config, size in FORWARD_ARCHS:
    out['archs'][label] = forward_record(config, size)
    print(label, out['archs'][label]['eval_jaxpr_sha256'][:12], file=sys.stderr)
  os.makedirs(FIXTURES, exist_ok=True)
  path = os.path.join(FIXTURES, 'default_forward.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=1)
    f.write('\n')
  print(f'wrote {path}')
  return 0


# --- Part 'timm' ------------------------------------------------------------------


def _torch():
  sys.path.insert(0, os.path.join(REPO, 'benchmarks', 'peer'))
  import torch_models  # pylint: disable=g-import-not-at-top
  torch_models.declare_torchvision_ops()
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def timm_features_model(arch: str, state_dict: dict):
  """timm's features_only model of `arch` holding `state_dict` (a full model's)."""
  torch = _torch()
  import timm  # pylint: disable=g-import-not-at-top
  model = timm.create_model(arch, pretrained=False, features_only=True).eval()
  # features_only flattens the top-level Sequentials (conv1.0 -> conv1_0).
  ours = {}
  for key in model.state_dict():
    head, _, rest = key.partition('.')
    full = key if key in state_dict else head.replace('_', '.', 1) + '.' + rest
    if full not in state_dict:
      raise KeyError(f'{arch}: features_only key {key} has no counterpart')
    ours[key] = torch.from_numpy(np.asarray(state_dict[full]))
  model.load_state_dict(ours, strict=True)
  return model


def check_timm(arch: str, images_nhwc: np.ndarray) -> dict:
  """Our features vs timm's for seeded random weights: differences and feature_info."""
  import jax  # pylint: disable=g-import-not-at-top
  torch = _torch()
  from resnet_jax import models  # pylint: disable=g-import-not-at-top
  from resnet_jax import weights  # pylint: disable=g-import-not-at-top
  state_dict = weights.random_state_dict(weights.key_table(arch, 'timm', num_classes=CLASSES))
  model, variables = weights.from_state_dict(state_dict, arch, 'timm')
  reference = timm_features_model(arch, state_dict)
  with torch.no_grad():
    theirs = [t.numpy().transpose(0, 2, 3, 1) for t in reference(
        torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy()))]
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False, features=True))
  ours = {k: np.asarray(v) for k, v in apply(variables, images_nhwc).items()}
  info = [f.as_timm() for f in models.feature_info(model.spec)]
  result = {'arch': arch, 'info_equal': info == reference.feature_info.get_dicts(),
            'info': info, 'timm_info': reference.feature_info.get_dicts(), 'maps': {}}
  # jax returns dicts with sorted keys: pair the maps by name, in network order.
  for name, ref in zip(models.feature_names(model.spec), theirs):
    mine = ours[name]
    if mine.shape != ref.shape:
      result['maps'][name] = {'shape': list(mine.shape), 'timm_shape': list(ref.shape)}
      continue
    diff = np.abs(mine.astype(np.float64) - ref)
    result['maps'][name] = {
        'shape': list(mine.shape), 'max_abs': float(diff.max()),
        'max_rel': float(diff.max() / max(np.abs(ref).max(), 1e-30)),
        'timm': ref}
  result['ok'] = result['info_equal'] and len(theirs) == len(ours) and all(
      m.get('max_rel', np.inf) <= TOLERANCE for m in result['maps'].values())
  return result


def part_timm(args) -> int:
  from resnet_jax import weights  # pylint: disable=g-import-not-at-top
  from resnet_jax.weights import synthetic  # pylint: disable=g-import-not-at-top
  archs = [a for a in weights.ARCHS['timm']
           if not args.only or any(fnmatch.fnmatch(a, p) for p in args.only.split(','))]
  images = synthetic.random_images(BATCH, SIZE, seed=0)
  rows, fixtures, samples, failed = [], {}, {}, []
  for arch in archs:
    start = time.perf_counter()
    r = check_timm(arch, images)
    seconds = time.perf_counter() - start
    worst = max(r['maps'].values(), key=lambda m: m.get('max_rel', np.inf))
    print(f"{arch}: {'ok' if r['ok'] else 'FAILED'}, max abs "
          f"{max(m.get('max_abs', np.inf) for m in r['maps'].values()):.2e}, max rel "
          f"{worst.get('max_rel', np.inf):.2e}, feature_info "
          f"{'equal' if r['info_equal'] else 'DIFFERS'} ({seconds:.1f} s)", flush=True)
    rows.append((arch, r, seconds))
    if not r['ok']:
      failed.append(arch)
    fixtures[arch] = r['timm_info']
    if arch in FIXTURE_ARCHS:
      for name, m in r['maps'].items():
        flat = m['timm'].reshape(-1)
        samples[f'{arch}/{name}'] = flat[sample_indices(flat.size)].astype(np.float32)
  if args.out:
    write_report(args.out, rows)
  if args.fixtures:
    os.makedirs(FIXTURES, exist_ok=True)
    with open(os.path.join(FIXTURES, 'timm.json'), 'w', encoding='utf-8') as f:
      json.dump({'size': SIZE, 'batch': BATCH, 'classes': CLASSES, 'seed': 0,
                 'tolerance': TOLERANCE, 'samples': FIXTURE_SAMPLES,
                 'feature_info': fixtures}, f, indent=1)
      f.write('\n')
    np.savez_compressed(os.path.join(FIXTURES, 'timm.npz'), **samples)
    print(f'wrote {FIXTURES}/timm.json, timm.npz')
  if failed:
    print(f'FAILED: {", ".join(failed)}')
    return 1
  return 0


def write_report(path: str, rows) -> None:
  import timm  # pylint: disable=g-import-not-at-top
  torch = _torch()
  lines = [
      '# Intermediate features vs timm `features_only`',
      '',
      f'`experiments/features_parity.py --part=timm`, {time.strftime("%Y-%m-%d")}: timm '
      f'{timm.__version__}, torch {torch.__version__}, float32 on the CPU. Seeded random '
      f'weights with random BatchNorm statistics ({BATCH} images of {SIZE}x{SIZE}, '
      'standard normal); per architecture, the largest difference over all its feature '
      'maps: absolute, and relative to the map\'s largest |value|. feature_info: '
      '`[f.as_timm() for f in models.feature_info(spec)] == '
      'timm_model.feature_info.get_dicts()`.',
      '',
      '| timm arch | maps (channels / reduction) | max abs | max rel | feature_info | s |',
      '|---|---|---|---|---|---|',
  ]
  for arch, r, seconds in rows:
    maps = ', '.join(f"{i['num_chs']}/{i['reduction']}" for i in r['info'])
    max_abs = max(m.get('max_abs', np.inf) for m in r['maps'].values())
    max_rel = max(m.get('max_rel', np.inf) for m in r['maps'].values())
    lines.append(f"| {arch} | {maps} | {max_abs:.2e} | {max_rel:.2e} | "
                 f"{'equal' if r['info_equal'] else 'DIFFERS'} | {seconds:.1f} |")
  ok = sum(r['ok'] for _, r, _ in rows)
  lines += ['', f'{ok} of {len(rows)} architectures within {TOLERANCE:g} relative with '
            'equal feature_info.', '']
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  print(f'wrote {path}')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--part', choices=('timm', 'forward'), default='timm')
  parser.add_argument('--only', default='', help="timm: comma-separated patterns, e.g. 'resnet1*'.")
  parser.add_argument('--out', default='', help='timm: write the Markdown table here.')
  parser.add_argument('--fixtures', action='store_true',
                      help='timm: write tests/fixtures/features/timm.{json,npz}.')
  parser.add_argument('--code', default=REPO,
                      help='forward: the source tree whose resnet_jax is recorded.')
  args = parser.parse_args()
  sys.path.insert(0, os.path.abspath(args.code) if args.part == 'forward' else REPO)
  return {'timm': part_timm, 'forward': part_forward}[args.part](args)


if __name__ == '__main__':
  sys.exit(main())
