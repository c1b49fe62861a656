r"""Training-recipe parity with timm: Mixup/CutMix, losses, weight EMA.

Writes the fixtures that tests/test_mixup.py, tests/test_losses.py and
tests/test_ema.py compare resnet_jax.augment.mixup, resnet_jax.losses and
resnet_jax.ema against, from timm 1.0.31 itself (the tests never import torch):

  mixup.npz/.json   timm's Mixup(mode='batch') on fixed NHWC inputs, one case
                    per setting (Mixup, CutMix with and without lambda
                    correction, cutmix_minmax, switching, not applied), with
                    the lambda and box timm drew (numpy's global RNG, fixed
                    seed); and summary statistics of 20000 of timm's draws per
                    setting (how often it mixes, switches, the moments of
                    lambda, box sides) for the distribution tests.
  losses.npz/.json  SoftTargetCrossEntropy, LabelSmoothingCrossEntropy,
                    BinaryCrossEntropy (smoothing, target_threshold, hard and
                    soft targets), timm's smoothed one-hot; the Bag of Tricks
                    distillation term written in torch (value and gradient);
                    timm's LogitDistillationTask (KL form) on the same logits.
  ema.npz/.json     a conv + BatchNorm + linear torch model trained for 30
                    SGD steps, its state_dict after each, and timm's
                    ModelEmaV3 (two settings) after each update; get_decay
                    for steps 0..300 under several settings.

Run in the peer venv (torch, timm), then the JAX side prints the parity
summary (max differences per check) with the project's venv:

    benchmarks/peer/.venv/bin/python experiments/recipe_parity.py \
        --out=tests/fixtures/recipes
    .venv/bin/python experiments/recipe_parity.py --compare --out=tests/fixtures/recipes

The first command runs the second itself when --jax_python (default
.venv/bin/python) exists. Exits 1 when a comparison exceeds its tolerance.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Mixup inputs: non-square images so that a swapped H/W shows.
BATCH, HEIGHT, WIDTH, CHANNELS, NUM_CLASSES = 8, 12, 10, 3, 10
STAT_DRAWS = 20000
STAT_HW = (32, 32)

# Name -> (timm Mixup keyword arguments, condition the case's seed must meet).
MIXUP_CASES = {
    'mixup': (dict(mixup_alpha=0.2, cutmix_alpha=0.0), 'mixup'),
    'mixup_no_smoothing': (dict(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.0),
                           'mixup'),
    'cutmix': (dict(mixup_alpha=0.0, cutmix_alpha=1.0), 'cutmix_clipped'),
    'cutmix_uncorrected': (dict(mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=False),
                           'cutmix_clipped'),
    'cutmix_minmax': (dict(mixup_alpha=0.0, cutmix_alpha=0.0, cutmix_minmax=(0.2, 0.8)),
                      'cutmix'),
    'switch_to_mixup': (dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5), 'mixup'),
    'switch_to_cutmix': (dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5),
                         'cutmix'),
    'not_applied': (dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5), 'none'),
}

# Settings whose draw distributions are compared (timm's defaults elsewhere).
STAT_SPECS = {
    'deit': dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.8, switch_prob=0.5),
    'uncorrected': dict(mixup_alpha=0.2, cutmix_alpha=0.5, prob=1.0, switch_prob=0.3,
                        correct_lam=False),
    'minmax': dict(mixup_alpha=0.0, cutmix_alpha=0.0, cutmix_minmax=(0.2, 0.8),
                   prob=0.6),
}

EMA_SPECS = {
    'plain': dict(decay=0.9),
    'warmup': dict(decay=0.8, min_decay=0.3, update_after_step=3, use_warmup=True,
                   warmup_gamma=1.5, warmup_power=0.75),
}
DECAY_SPECS = {
    'timm_default': dict(decay=0.9999),
    'warmup_2_3': dict(decay=0.9999, use_warmup=True),
    'warmup_clamped': dict(decay=0.99, min_decay=0.5, update_after_step=10,
                           use_warmup=True, warmup_gamma=2.0, warmup_power=1.0),
}
EMA_STEPS = 30

DISTILL_TEMPERATURES = (1.0, 2.0, 4.0)
BCE_CASES = {
    'hard': dict(targets='labels', smoothing=0.0, target_threshold=None),
    'hard_smoothed': dict(targets='labels', smoothing=0.1, target_threshold=None),
    'hard_threshold': dict(targets='labels', smoothing=0.1, target_threshold=0.2),
    'soft': dict(targets='soft', smoothing=0.1, target_threshold=None),
    'soft_threshold': dict(targets='soft', smoothing=0.1, target_threshold=0.2),
}


def draw_stats(use_cutmix, sampled_lam, lam, box_h, box_w) -> dict:
  """Summary of many draws: frequencies and the first, second and fourth moments.

  The tests compute the same summary of resnet_jax's draws; each moment comes
  with what its standard error needs (variance, fourth central moment). A
  batch counts as mixed when its drawn lam is below 1 - 1e-6: timm skips
  lam == 1 exactly, which float32 draws (resnet_jax's) hit far more often than
  float64 ones for small alpha, with no visible effect on the batch.
  """
  applied = np.asarray(sampled_lam, np.float64) < 1 - 1e-6
  cut = np.asarray(use_cutmix, bool) & applied
  mix = applied & ~cut

  def moments(x):
    x = np.asarray(x, np.float64)
    if x.size == 0:
      return {'n': 0}
    c = x - x.mean()
    return {'n': int(x.size), 'mean': float(x.mean()), 'var': float(np.mean(c ** 2)),
            'm4': float(np.mean(c ** 4))}

  return {
      'n': int(applied.size),
      'p_applied': float(applied.mean()),
      'p_cutmix_given_applied': float(cut.sum() / max(1, applied.sum())),
      'mixup_lam': moments(np.asarray(lam)[mix]),
      'cutmix_sampled_lam': moments(np.asarray(sampled_lam)[cut]),
      'cutmix_lam': moments(np.asarray(lam)[cut]),
      'cutmix_box_h': moments(np.asarray(box_h)[cut]),
      'cutmix_box_w': moments(np.asarray(box_w)[cut]),
  }


# --------------------------------------------------------------------------- timm side


def _peer_imports():
  sys.path.insert(0, os.path.join(REPO, 'benchmarks', 'peer'))
  import torch_models  # pylint: disable=g-import-not-at-top
  torch_models.declare_torchvision_ops()


def _timm_draw(mixer, img_shape):
  """One batch's draws exactly as timm's Mixup._mix_batch makes them."""
  from timm.data import mixup as timm_mixup  # pylint: disable=g-import-not-at-top
  lam, use_cutmix = mixer._params_per_batch()  # pylint: disable=protected-access
  sampled, box = float(lam), (0, 0, 0, 0)
  applied = lam != 1.0
  if applied and use_cutmix:
    box, lam = timm_mixup.cutmix_bbox_and_lam(img_shape, lam,
                                              ratio_minmax=mixer.cutmix_minmax,
                                              correct_lam=mixer.correct_lam)
    box = tuple(int(v) for v in box)
  return dict(applied=bool(applied), use_cutmix=bool(applied and use_cutmix),
              sampled_lam=sampled, lam=float(lam), box=box)


def mixup_fixtures(out_dir: str) -> list[str]:
  import torch  # pylint: disable=g-import-not-at-top
  from timm.data import mixup as timm_mixup  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  images = rng.standard_normal((BATCH, HEIGHT, WIDTH, CHANNELS)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
  arrays = {'images': images, 'labels': labels}
  cases, lines = [], []
  nchw_shape = (BATCH, CHANNELS, HEIGHT, WIDTH)
  for name, (kwargs, want) in MIXUP_CASES.items():
    kwargs = dict(kwargs, num_classes=NUM_CLASSES, mode='batch')
    for seed in range(1000):
      np.random.seed(seed)
      draw = _timm_draw(timm_mixup.Mixup(**kwargs), nchw_shape)
      y0, y1, x0, x1 = draw['box']
      clipped = draw['use_cutmix'] and (
          (y1 - y0) != int(HEIGHT * np.sqrt(1 - draw['sampled_lam']))
          or (x1 - x0) != int(WIDTH * np.sqrt(1 - draw['sampled_lam'])))
      if {'mixup': draw['applied'] and not draw['use_cutmix'],
          'cutmix': draw['use_cutmix'] and y1 > y0 and x1 > x0,
          'cutmix_clipped': clipped and y1 > y0 and x1 > x0,
          'none': not draw['applied']}[want]:
        break
    else:
      raise RuntimeError(f'no seed below 1000 gives a {want} draw for {name}')
    # The same seed again, now through timm's Mixup.__call__; the wrapped draw
    # functions record what it actually used.
    mixer = timm_mixup.Mixup(**kwargs)
    used = {}
    params_fn = mixer._params_per_batch  # pylint: disable=protected-access
    bbox_fn = timm_mixup.cutmix_bbox_and_lam

    def params_spy():
      used['params'] = params_fn()
      return used['params']

    def bbox_spy(*args, **kw):
      used['bbox'] = bbox_fn(*args, **kw)
      return used['bbox']

    mixer._params_per_batch = params_spy  # pylint: disable=protected-access
    timm_mixup.cutmix_bbox_and_lam = bbox_spy
    try:
      np.random.seed(seed)
      x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
      out_x, out_t = mixer(x, torch.from_numpy(labels).long())
    finally:
      timm_mixup.cutmix_bbox_and_lam = bbox_fn
    assert float(used['params'][0]) == draw['sampled_lam'], (name, used, draw)
    if 'bbox' in used:
      assert tuple(int(v) for v in used['bbox'][0]) == draw['box'], (name, used, draw)
      assert float(used['bbox'][1]) == draw['lam'], (name, used, draw)
    spec = {k: v for k, v in kwargs.items() if k not in ('num_classes', 'mode')}
    cases.append(dict(name=name, spec=spec, seed=seed, **draw))
    arrays[f'{name}/images'] = out_x.numpy().transpose(0, 2, 3, 1)
    arrays[f'{name}/targets'] = out_t.numpy().astype(np.float32)
    lines.append(f'  mixup {name:20s} seed={seed:3d} applied={draw["applied"]!s:5} '
                 f'cutmix={draw["use_cutmix"]!s:5} lam={draw["lam"]:.4f} box={draw["box"]}')

  stats = {}
  for name, kwargs in STAT_SPECS.items():
    mixer = timm_mixup.Mixup(**kwargs, num_classes=NUM_CLASSES, mode='batch')
    np.random.seed(1)
    draws = [_timm_draw(mixer, (1, CHANNELS) + STAT_HW) for _ in range(STAT_DRAWS)]
    box = np.array([d['box'] for d in draws])
    stats[name] = dict(spec=kwargs, image_hw=STAT_HW, **draw_stats(
        [d['use_cutmix'] for d in draws],
        [d['sampled_lam'] for d in draws], [d['lam'] for d in draws],
        box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]))
    s = stats[name]
    lines.append(f'  draws {name:12s} p_applied={s["p_applied"]:.3f} '
                 f'p_cutmix={s["p_cutmix_given_applied"]:.3f} '
                 f'mixup lam mean={s["mixup_lam"].get("mean", float("nan")):.3f} '
                 f'cutmix lam mean={s["cutmix_lam"]["mean"]:.3f}')
  np.savez_compressed(os.path.join(out_dir, 'mixup.npz'), **arrays)
  _write_json(os.path.join(out_dir, 'mixup.json'),
              dict(num_classes=NUM_CLASSES, cases=cases, stats=stats))
  return lines


def losses_fixtures(out_dir: str) -> list[str]:
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  from timm.data.mixup import mixup_target  # pylint: disable=g-import-not-at-top
  from timm.loss import BinaryCrossEntropy  # pylint: disable=g-import-not-at-top
  from timm.loss import LabelSmoothingCrossEntropy  # pylint: disable=g-import-not-at-top
  from timm.loss import SoftTargetCrossEntropy  # pylint: disable=g-import-not-at-top
  from timm.task.distillation import DistillationTeacher  # pylint: disable=g-import-not-at-top
  from timm.task.distillation import LogitDistillationTask  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(1)
  b, c = 8, NUM_CLASSES
  logits = (3 * rng.standard_normal((b, c))).astype(np.float32)
  teacher = (3 * rng.standard_normal((b, c))).astype(np.float32)
  labels = rng.integers(0, c, b).astype(np.int32)
  t_logits, t_teacher = torch.from_numpy(logits), torch.from_numpy(teacher)
  t_labels = torch.from_numpy(labels).long()
  soft = mixup_target(t_labels, c, lam=0.7, smoothing=0.1)
  arrays = {'logits': logits, 'teacher_logits': teacher, 'labels': labels,
            'soft_targets': soft.numpy()}
  values, lines = {}, []

  for s in (0.0, 0.1, 0.3):
    arrays[f'smooth/{s}'] = mixup_target(t_labels, c, lam=1.0, smoothing=s).numpy()
  per_example = torch.sum(-soft * F.log_softmax(t_logits, dim=-1), dim=-1)
  arrays['soft_ce_per_example'] = per_example.numpy()
  values['soft_target_ce'] = float(SoftTargetCrossEntropy()(t_logits, soft))
  values['label_smoothing_ce_0.1'] = float(LabelSmoothingCrossEntropy(0.1)(t_logits,
                                                                           t_labels))
  for name, case in BCE_CASES.items():
    loss = BinaryCrossEntropy(smoothing=case['smoothing'],
                              target_threshold=case['target_threshold'])
    values[f'bce/{name}'] = float(loss(t_logits, t_labels if case['targets'] == 'labels'
                                       else soft))

  class FixedLogits(nn.Module):
    """A 'model' whose output is a fixed tensor (a parameter, for the gradient)."""

    def __init__(self, out, trainable):
      super().__init__()
      self.out = nn.Parameter(out.clone(), requires_grad=trainable)
      self.num_classes, self.in_chans = c, 3
      self.pretrained_cfg = {'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)}

    def forward(self, x):
      del x
      return self.out

  for t in DISTILL_TEMPERATURES:
    z = t_logits.clone().requires_grad_(True)
    ours = t * t * torch.sum(-F.softmax(t_teacher / t, dim=-1)
                             * F.log_softmax(z / t, dim=-1), dim=-1)
    ours.sum().backward()
    arrays[f'distill/{t}/per_example'] = ours.detach().numpy()
    arrays[f'distill/{t}/grad_sum'] = z.grad.numpy()
    # timm's task: hard-label CE + T^2 * KL(teacher || student), both batch means.
    student = FixedLogits(t_logits, trainable=True)
    task = LogitDistillationTask(student, DistillationTeacher(FixedLogits(t_teacher, False)),
                                 criterion=nn.CrossEntropyLoss(), temperature=t,
                                 verbose=False)
    out = task(torch.zeros(b, 3, 1, 1), t_labels)
    out['loss'].backward()
    values[f'timm_distill/{t}/loss'] = out['loss'].item()
    values[f'timm_distill/{t}/task_loss'] = out['task_loss'].item()
    values[f'timm_distill/{t}/kd_loss'] = out['kd_loss'].item()
    arrays[f'timm_distill/{t}/grad'] = student.out.grad.numpy()
    teacher_entropy = float(-(F.softmax(t_teacher / t, -1)
                              * F.log_softmax(t_teacher / t, -1)).sum(-1).mean())
    lines.append(f'  distill T={t}: mean CE form {ours.mean().item():.5f} = timm KL form '
                 f'{values[f"timm_distill/{t}/kd_loss"]:.5f} + T^2 * teacher entropy '
                 f'{t * t * teacher_entropy:.5f}')
  lines.append('  losses: ' + ', '.join(f'{k}={v:.5f}' for k, v in values.items()
                                        if not k.startswith('timm_distill')))
  np.savez_compressed(os.path.join(out_dir, 'losses.npz'), **arrays)
  _write_json(os.path.join(out_dir, 'losses.json'),
              dict(values=values, bce_cases=BCE_CASES,
                   temperatures=list(DISTILL_TEMPERATURES)))
  return lines


def ema_fixtures(out_dir: str) -> list[str]:
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from timm.utils.model_ema import ModelEmaV3  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
  emas = {name: ModelEmaV3(model, **kwargs) for name, kwargs in EMA_SPECS.items()}
  opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)

  history = {}

  def record(prefix, module):
    for k, v in module.state_dict().items():
      history.setdefault(f'{prefix}/{k}', []).append(v.detach().numpy().copy())

  record('model', model)
  for step in range(1, EMA_STEPS + 1):
    model.train()
    x = torch.randn(8, 3, 6, 6) * (1 + step / 10)  # Shifting statistics.
    loss = nn.functional.cross_entropy(model(x), torch.randint(0, 5, (8,)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    record('model', model)
    for name, ema in emas.items():
      ema.update(model, step=step)
      record(f'ema/{name}', ema.module)
  # One array per entry, steps first: model/K is [steps + 1, ...] (index 0 is
  # the initial model), ema/NAME/K is [steps, ...] (after update 1, 2, ...).
  arrays = {k: np.stack(v) for k, v in history.items()}
  keys = list(model.state_dict())
  decays = {}
  for name, kwargs in DECAY_SPECS.items():
    ema = ModelEmaV3(model, **kwargs)
    decays[name] = [ema.get_decay(s) for s in range(301)]
  np.savez_compressed(os.path.join(out_dir, 'ema.npz'), **arrays)
  _write_json(os.path.join(out_dir, 'ema.json'),
              dict(steps=EMA_STEPS, keys=keys, specs=EMA_SPECS, decay_specs=DECAY_SPECS,
                   decays=decays))
  drift = max(float(np.abs(arrays[f'ema/plain/{k}'][-1] - arrays[f'model/{k}'][-1]).max())
              for k in keys)
  return [f'  ema: {len(keys)} state_dict entries x {EMA_STEPS} steps, specs '
          f'{", ".join(EMA_SPECS)}; max |ema - model| at the end {drift:.4f} '
          f'(non-trivial averaging); decay tables {", ".join(DECAY_SPECS)}']


def _write_json(path, obj):
  with open(path, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write('\n')


# --------------------------------------------------------------------------- JAX side


def compare(out_dir: str) -> bool:
  """resnet_jax against the fixtures; prints one line per check. True if all pass.

  A check passes when |ours - timm| <= atol + rtol * |timm| everywhere
  (numpy's allclose): float32 rounding, relative to the values' size.
  """
  sys.path.insert(0, REPO)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from resnet_jax import ema as ema_lib  # pylint: disable=g-import-not-at-top
  from resnet_jax import losses  # pylint: disable=g-import-not-at-top
  from resnet_jax.augment import mixup  # pylint: disable=g-import-not-at-top

  results = []

  def check(name, got, want, rtol, atol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want)
    tol = atol + rtol * np.abs(want)
    # Zero tolerance (exact checks): any difference fails.
    ratio = np.divide(err, tol, out=np.where(err > 0, np.inf, 0.0), where=tol > 0)
    results.append((name, float(err.max()), float(ratio.max()), rtol, atol))

  def load(stem):
    with open(os.path.join(out_dir, f'{stem}.json')) as f:
      return np.load(os.path.join(out_dir, f'{stem}.npz')), json.load(f)

  fx, meta = load('mixup')
  for case in meta['cases']:
    params = mixup.MixParams(lam=jnp.float32(case['lam']),
                             use_cutmix=jnp.bool_(case['use_cutmix']),
                             box=tuple(jnp.int32(v) for v in case['box']),
                             sampled_lam=jnp.float32(case['sampled_lam']))
    spec = mixup.MixupSpec(**case['spec'])
    targets = losses.smooth_labels(fx['labels'], meta['num_classes'], spec.label_smoothing)
    images, targets = mixup.apply_mix(fx['images'], targets, params)
    check(f'Mixup {case["name"]} images', images, fx[f'{case["name"]}/images'], 1e-6, 1e-6)
    check(f'Mixup {case["name"]} targets', targets, fx[f'{case["name"]}/targets'], 1e-6, 1e-7)

  fx, meta = load('losses')
  values = meta['values']
  logits, labels, teacher = fx['logits'], fx['labels'], fx['teacher_logits']
  for s in (0.0, 0.1, 0.3):
    check(f'smooth_labels {s}', losses.smooth_labels(labels, NUM_CLASSES, s),
          fx[f'smooth/{s}'], 0.0, 0.0)
  check('SoftTargetCrossEntropy', jnp.mean(losses.softmax_cross_entropy(
      logits, fx['soft_targets'])), values['soft_target_ce'], 1e-6, 1e-7)
  check('LabelSmoothingCrossEntropy', jnp.mean(losses.softmax_cross_entropy(
      logits, losses.smooth_labels(labels, NUM_CLASSES, 0.1))),
        values['label_smoothing_ce_0.1'], 1e-6, 1e-7)
  for name, case in meta['bce_cases'].items():
    targets = labels if case['targets'] == 'labels' else fx['soft_targets']
    got = jnp.mean(losses.binary_cross_entropy(
        logits, targets, smoothing=case['smoothing'],
        target_threshold=case['target_threshold']))
    check(f'BinaryCrossEntropy {name}', got, values[f'bce/{name}'], 1e-6, 1e-7)
  for t in meta['temperatures']:
    check(f'distillation T={t}', losses.distillation_loss(logits, teacher, t),
          fx[f'distill/{t}/per_example'], 1e-6, 1e-6)
    grad = jax.grad(lambda z: jnp.sum(losses.distillation_loss(z, teacher, t)))(logits)
    check(f'distillation T={t} gradient', grad, fx[f'distill/{t}/grad_sum'], 1e-6, 1e-6)
    # timm's task loss: mean hard-label CE + T^2 KL = ours minus T^2 * H(teacher).
    onehot = jax.nn.one_hot(labels, NUM_CLASSES)
    p_t = jax.nn.softmax(teacher / t)
    entropy = -jnp.sum(p_t * jax.nn.log_softmax(teacher / t), -1)

    def total(z):
      return jnp.mean(losses.softmax_cross_entropy(z, onehot)
                      + losses.distillation_loss(z, teacher, t) - t * t * entropy)

    check(f'timm LogitDistillationTask T={t} loss', total(logits),
          values[f'timm_distill/{t}/loss'], 1e-6, 1e-6)
    check(f'timm LogitDistillationTask T={t} grad', jax.grad(total)(logits),
          fx[f'timm_distill/{t}/grad'], 1e-6, 1e-7)

  fx, meta = load('ema')
  for name, kwargs in meta['decay_specs'].items():
    spec = ema_lib.EmaSpec(**kwargs)
    got = jax.vmap(lambda s: ema_lib.ema_decay(s, spec))(  # pylint: disable=cell-var-from-loop
        jnp.arange(len(meta['decays'][name])))
    check(f'get_decay {name}', got, meta['decays'][name], 1e-6, 1e-7)
  for name, kwargs in meta['specs'].items():
    spec = ema_lib.EmaSpec(**kwargs)
    state = ema_lib.init_ema({k: fx[f'model/{k}'][0] for k in meta['keys']})
    got = []
    for step in range(1, meta['steps'] + 1):
      state = ema_lib.update_ema(state, {k: fx[f'model/{k}'][step] for k in meta['keys']},
                                 ema_lib.ema_decay(step, spec))
      got.append(state)
    for k in meta['keys']:
      check(f'ModelEmaV3 {name} {k}', np.stack([g[k] for g in got]),
            fx[f'ema/{name}/{k}'], 1e-6, 1e-6)

  ok = True
  for name, err, ratio, rtol, atol in results:
    ok &= ratio <= 1
    print(f'  {"ok  " if ratio <= 1 else "FAIL"} {name:44s} max |diff| {err:.1e}  '
          f'(rtol {rtol:.0e}, atol {atol:.0e}: {ratio:.2f} of it)')
  return ok


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default=os.path.join(REPO, 'tests', 'fixtures', 'recipes'))
  parser.add_argument('--compare', action='store_true',
                      help='Compare resnet_jax against existing fixtures (project venv).')
  parser.add_argument('--jax_python', default=os.path.join(REPO, '.venv', 'bin', 'python'),
                      help='Interpreter for the comparison after generating; "" skips it.')
  args = parser.parse_args()
  if args.compare:
    print(f'resnet_jax vs timm fixtures in {args.out}:')
    return 0 if compare(args.out) else 1
  _peer_imports()
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  os.makedirs(args.out, exist_ok=True)
  print(f'timm {timm.__version__}, torch {torch.__version__}: fixtures in {args.out}')
  for lines in (mixup_fixtures(args.out), losses_fixtures(args.out),
                ema_fixtures(args.out)):
    print('\n'.join(lines))
  if args.jax_python and os.path.exists(args.jax_python):
    return subprocess.run([args.jax_python, os.path.abspath(__file__), '--compare',
                           f'--out={args.out}'], check=False).returncode
  return 0


if __name__ == '__main__':
  sys.exit(main())
