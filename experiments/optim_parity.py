r"""LAMB and LARS parity with timm: the fixtures tests/test_optim.py checks.

timm 1.0.31's Lamb and Lars, built as ResNet strikes back builds them
(`timm.optim.create_optimizer_v2(model, 'lamb' | 'lars', lr, weight_decay,
...)`, whose `param_groups_weight_decay` puts 1-d parameters and biases in a
group without weight decay), step a small ResNet-shaped torch model (two conv +
BatchNorm pairs, a squeeze-and-excitation style conv with a bias, a linear
head) through a fixed sequence of gradients and per-step learning rates (a
warmup, then a decay). The gradients' global norms straddle LAMB's clipping
norm, and one kernel's gradient is zero at one step (the trust ratio's
|g| = 0 branch). Written to tests/fixtures/optim/ (the tests never import
torch):

  timm.npz   init/<path>: the initial parameters; grads/<path>: [STEPS, ...]
             the gradients; <case>/<path>: [STEPS, ...] the parameters after
             each step. Paths and layouts are flax's (conv kernels HWIO,
             dense kernels (in, out), BatchNorm 'scale').
  timm.json  the cases (timm's keyword arguments and the resnet_jax config
             fields that ask for the same optimizer), the learning rates, the
             parameters timm decays, and per case the largest difference
             between timm's foreach (multi-tensor, its default on a GPU) and
             single-tensor implementations: timm's own float32 rounding; and
             the tolerance (RTOL, ATOL) the comparison and the test use.

The fixtures hold the foreach implementation's parameters. Run in the peer
venv (torch, timm); it then runs the comparison with the project's venv,
which prints the largest difference per case:

    benchmarks/peer/.venv/bin/python experiments/optim_parity.py
    .venv/bin/python experiments/optim_parity.py --compare

With --float64 (and an --out elsewhere) both sides compute in float64 (jax
with x64): what is left is any difference of formula, not float32 rounding.

    benchmarks/peer/.venv/bin/python experiments/optim_parity.py --float64 \
        --out=/tmp/optim_parity_float64

Exits 1 when a comparison exceeds the tolerance (RTOL, ATOL below, recorded
in timm.json for tests/test_optim.py).
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'optim')
STEPS = 10
# |ours - timm| <= ATOL + RTOL * |timm| after every step: float32 rounding over
# ten steps. LAMB's is mostly optax's Adam bias correction 1 - b2^t, computed
# in float32 where timm uses float64: the subtraction cancels in the first
# steps. In float64 (--float64) nothing is left but torch's clip_grad_norm_
# dividing by the norm + 1e-6 (optax's clip_by_global_norm by the norm).
RTOL, ATOL = 1e-5, 1e-6
# Global gradient norm of each step: below and above LAMB's max_grad_norm of 1.
GRAD_NORMS = (0.3, 2.0, 0.8, 5.0, 1.5, 0.1, 3.0, 0.9, 1.2, 0.5)
LR_SHAPE = (0.1, 0.3, 0.5, 0.8, 1.0, 1.0, 0.9, 0.7, 0.4, 0.2)
ZERO_GRAD = (5, 'se/kernel')  # (step, path): a kernel whose gradient is 0 there.

# name -> (timm optimizer, base lr, weight decay, timm keyword arguments,
#          train-loop clipping (timm's --clip-grad), resnet_jax config fields).
CASES = {
    'lamb': ('lamb', 0.02, 0.05, {}, None,
             {'optimizer': 'lamb', 'weight_decay': 0.05}),
    'lamb_wd0': ('lamb', 0.02, 0.0, {}, None,
                 {'optimizer': 'lamb', 'weight_decay': 0.0}),
    'lamb_options': ('lamb', 0.02, 0.02,
                     {'betas': (0.8, 0.99), 'eps': 1e-8, 'max_grad_norm': None}, None,
                     {'optimizer': 'lamb', 'weight_decay': 0.02, 'momentum': 0.8,
                      'beta2': 0.99, 'eps': 1e-8, 'lamb_max_grad_norm': 0.0}),
    'lamb_clip_grad': ('lamb', 0.02, 0.05, {}, 0.5,
                       {'optimizer': 'lamb', 'weight_decay': 0.05,
                        'grad_clip_norm': 0.5}),
    'lars': ('lars', 2.0, 5e-3, {}, None,
             {'optimizer': 'lars', 'weight_decay': 5e-3}),
    'lars_wd0': ('lars', 2.0, 0.0, {}, None,
                 {'optimizer': 'lars', 'weight_decay': 0.0}),
    'lars_options': ('lars', 2.0, 0.01,
                     {'momentum': 0.8, 'trust_coeff': 0.02, 'eps': 1e-6}, None,
                     {'optimizer': 'lars', 'weight_decay': 0.01, 'momentum': 0.8,
                      'lars_trust_coefficient': 0.02, 'eps': 1e-6}),
}

# flax path -> (torch parameter name, layout).
PARAMS = {
    'conv1/kernel': ('conv1.weight', 'conv'),
    'bn1/scale': ('bn1.weight', 'vector'),
    'bn1/bias': ('bn1.bias', 'vector'),
    'conv2/kernel': ('conv2.weight', 'conv'),
    'bn2/scale': ('bn2.weight', 'vector'),
    'bn2/bias': ('bn2.bias', 'vector'),
    'se/kernel': ('se.weight', 'conv'),
    'se/bias': ('se.bias', 'vector'),
    'head/kernel': ('fc.weight', 'linear'),
    'head/bias': ('fc.bias', 'vector'),
}


def to_flax(array: np.ndarray, layout: str) -> np.ndarray:
  if layout == 'conv':  # OIHW -> HWIO
    return np.transpose(array, (2, 3, 1, 0))
  if layout == 'linear':  # (out, in) -> (in, out)
    return array.T
  return array


def to_torch(array: np.ndarray, layout: str) -> np.ndarray:
  if layout == 'conv':  # HWIO -> OIHW
    return np.transpose(array, (3, 2, 0, 1))
  if layout == 'linear':
    return array.T
  return array


def inputs(dtype=np.float32) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Initial parameters and [STEPS, ...] gradients (flax layout), seeded."""
  rng = np.random.default_rng(0)
  shapes = {'conv1/kernel': (3, 3, 3, 4), 'conv2/kernel': (3, 3, 4, 8),
            'se/kernel': (1, 1, 8, 4), 'head/kernel': (8, 10), 'head/bias': (10,),
            'se/bias': (4,)}
  for bn, n in (('bn1', 4), ('bn2', 8)):
    shapes[f'{bn}/scale'] = shapes[f'{bn}/bias'] = (n,)
  init = {}
  for path in PARAMS:
    x = rng.standard_normal(shapes[path]).astype(np.float32)
    if path.endswith('scale'):
      x = 1.0 + 0.1 * x
    elif path.endswith('kernel'):
      x = x * np.float32(np.sqrt(2.0 / np.prod(shapes[path][:-1])))
    else:
      x = 0.1 * x
    init[path] = x.astype(dtype)
  grads = {p: np.zeros((STEPS, *init[p].shape), dtype) for p in PARAMS}
  for step, norm in enumerate(GRAD_NORMS):
    g = {p: rng.standard_normal(init[p].shape) for p in PARAMS}
    if step == ZERO_GRAD[0]:
      g[ZERO_GRAD[1]] = np.zeros_like(g[ZERO_GRAD[1]])
    total = np.sqrt(sum(np.sum(v ** 2) for v in g.values()))
    for p in PARAMS:
      grads[p][step] = (g[p] * norm / total).astype(dtype)
  return init, grads


# --------------------------------------------------------------------------- timm side


def _model(init: dict[str, np.ndarray]):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class Tiny(nn.Module):
    """ResNet-shaped: conv + BN, conv + BN, an SE conv with a bias, a linear head."""

    def __init__(self):
      super().__init__()
      self.conv1 = nn.Conv2d(3, 4, 3, bias=False)
      self.bn1 = nn.BatchNorm2d(4)
      self.conv2 = nn.Conv2d(4, 8, 3, bias=False)
      self.bn2 = nn.BatchNorm2d(8)
      self.se = nn.Conv2d(8, 4, 1)
      self.fc = nn.Linear(8, 10)

  model = Tiny().to(torch.from_numpy(init['conv1/kernel']).dtype)
  named = dict(model.named_parameters())
  assert set(named) == {name for name, _ in PARAMS.values()}, sorted(named)
  with torch.no_grad():
    for path, (name, layout) in PARAMS.items():
      named[name].copy_(torch.from_numpy(to_torch(init[path], layout).copy()))
  return model


def run_timm(case: str, init, grads, foreach: bool) -> dict[str, np.ndarray]:
  """timm's optimizer of `case` over the gradients: {path: [STEPS, ...]}."""
  import torch  # pylint: disable=g-import-not-at-top
  from timm import optim as timm_optim  # pylint: disable=g-import-not-at-top
  from timm.utils import dispatch_clip_grad  # pylint: disable=g-import-not-at-top
  opt_name, base_lr, wd, kwargs, clip_grad, _ = CASES[case]
  model = _model(init)
  named = dict(model.named_parameters())
  opt = timm_optim.create_optimizer_v2(model, opt_name, lr=base_lr, weight_decay=wd,
                                       foreach=foreach, **kwargs)
  out = {p: [] for p in PARAMS}
  for step in range(STEPS):
    for group in opt.param_groups:
      group['lr'] = base_lr * LR_SHAPE[step]
    for path, (name, layout) in PARAMS.items():
      named[name].grad = torch.from_numpy(to_torch(grads[path][step], layout).copy())
    if clip_grad is not None:  # timm's train.py, before optimizer.step().
      dispatch_clip_grad(model.parameters(), clip_grad, mode='norm')
    opt.step()
    for path, (name, layout) in PARAMS.items():
      out[path].append(to_flax(named[name].detach().numpy(), layout).copy())
  return {p: np.stack(v) for p, v in out.items()}


def decayed_paths(init) -> list[str]:
  """The flax paths timm's param_groups_weight_decay puts in the decay group."""
  from timm.optim import param_groups_weight_decay  # pylint: disable=g-import-not-at-top
  model = _model(init)
  groups = param_groups_weight_decay(model, weight_decay=0.05)
  decay = {id(p) for g in groups if g['weight_decay'] > 0 for p in g['params']}
  named = dict(model.named_parameters())
  return sorted(path for path, (name, _) in PARAMS.items() if id(named[name]) in decay)


def write_fixtures(out_dir: str, dtype=np.float32) -> None:
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  init, grads = inputs(dtype)
  arrays = {f'init/{p}': v for p, v in init.items()}
  arrays.update({f'grads/{p}': v for p, v in grads.items()})
  spread = {}
  for case in CASES:
    multi = run_timm(case, init, grads, foreach=True)
    single = run_timm(case, init, grads, foreach=False)
    spread[case] = float(max(np.abs(multi[p] - single[p]).max() for p in PARAMS))
    arrays.update({f'{case}/{p}': v for p, v in multi.items()})
    print(f'  {case:16s} timm foreach vs single-tensor: max |diff| {spread[case]:.1e}')
  meta = {
      'timm': timm.__version__, 'torch': torch.__version__, 'steps': STEPS,
      'dtype': np.dtype(dtype).name, 'rtol': RTOL, 'atol': ATOL,
      'paths': list(PARAMS), 'decayed_paths': decayed_paths(init),
      'cases': {name: {'timm_optimizer': c[0], 'timm_kwargs': c[3], 'weight_decay': c[2],
                       'clip_grad': c[4], 'config': c[5],
                       'lrs': [c[1] * s for s in LR_SHAPE],
                       'timm_foreach_vs_single': spread[name]}
                for name, c in CASES.items()},
  }
  os.makedirs(out_dir, exist_ok=True)
  np.savez_compressed(os.path.join(out_dir, 'timm.npz'), **arrays)
  with open(os.path.join(out_dir, 'timm.json'), 'w', encoding='utf-8') as f:
    json.dump(meta, f, indent=1)
    f.write('\n')


# --------------------------------------------------------------------------- JAX side


def compare(out_dir: str) -> bool:
  """resnet_jax's optimizers against the fixtures, one line per case. True if all pass."""
  with open(os.path.join(out_dir, 'timm.json'), encoding='utf-8') as f:
    meta = json.load(f)
  fx = np.load(os.path.join(out_dir, 'timm.npz'))
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_enable_x64', meta['dtype'] == 'float64')
  sys.path.insert(0, REPO)
  from resnet_jax import configlib  # pylint: disable=g-import-not-at-top
  from resnet_jax import optim  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  tree = lambda prefix, i=None: traverse_util.unflatten_dict(
      {tuple(p.split('/')): fx[f'{prefix}/{p}'] if i is None else fx[f'{prefix}/{p}'][i]
       for p in meta['paths']})
  ok = True
  for case, c in meta['cases'].items():
    spec = optim.resolve(configlib.load(os.path.join(REPO, 'configs', 'base.py'),
                                        c['config']))
    tx = optim.create_optimizer(spec, lambda n, lrs=jnp.asarray(c['lrs']): lrs[n])
    params = tree('init')
    state = tx.init(params)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))  # pylint: disable=cell-var-from-loop
    err = rel = 0.0
    for i in range(meta['steps']):
      updates, state = step(tree('grads', i), state, params)
      params = optax.apply_updates(params, updates)
      flat = traverse_util.flatten_dict(params, sep='/')
      for p in meta['paths']:
        want = fx[f'{case}/{p}'][i]
        diff = np.abs(np.asarray(flat[p], np.float64) - want)
        err = max(err, float(diff.max()))
        rel = max(rel, float((diff / (ATOL + RTOL * np.abs(want))).max()))
    ok &= rel <= 1
    print(f'  {"ok  " if rel <= 1 else "FAIL"} {case:16s} max |ours - timm| {err:.1e} '
          f'({rel:.2f} of the tolerance; timm foreach vs single '
          f'{c["timm_foreach_vs_single"]:.1e})')
  return ok


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default=FIXTURES)
  parser.add_argument('--float64', action='store_true',
                      help='Both sides in float64 (a formula check; use another --out).')
  parser.add_argument('--compare', action='store_true',
                      help='Compare resnet_jax against existing fixtures (project venv).')
  parser.add_argument('--jax_python', default=os.path.join(REPO, '.venv', 'bin', 'python'),
                      help='Interpreter for the comparison after generating; "" skips it.')
  args = parser.parse_args()
  if args.compare:
    print(f'resnet_jax vs timm in {args.out} (rtol {RTOL:.0e}, atol {ATOL:.0e}):')
    return 0 if compare(args.out) else 1
  sys.path.insert(0, os.path.join(REPO, 'benchmarks', 'peer'))
  import torch_models  # pylint: disable=g-import-not-at-top
  torch_models.declare_torchvision_ops()
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  print(f'timm {timm.__version__}, torch {torch.__version__}: fixtures in {args.out}')
  if args.float64 and os.path.abspath(args.out) == FIXTURES:
    parser.error('--float64 needs an --out other than the fixtures directory')
  write_fixtures(args.out, np.float64 if args.float64 else np.float32)
  if args.jax_python and os.path.exists(args.jax_python):
    return subprocess.run([args.jax_python, os.path.abspath(__file__), '--compare',
                           f'--out={args.out}'], check=False, cwd=REPO).returncode
  return 0


if __name__ == '__main__':
  sys.exit(main())
