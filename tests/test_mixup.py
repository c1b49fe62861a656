"""resnet_jax.augment.mixup against timm 1.0.31's Mixup (fixtures from experiments/recipe_parity.py).

Three kinds of checks: apply_mix given timm's own draws reproduces timm's
mixed images and targets; our sampler's draws have timm's distributions (20000
of ours against statistics of 20000 of timm's, and against the formulas); and
8 devices under shard_map give exactly the 1-device result (in a subprocess
with 8 virtual CPU devices; this file is also that subprocess's script).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import losses
from resnet_jax.augment import mixup
from resnet_jax.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, 'fixtures', 'recipes')
DRAWS = 20000
# Two-sample comparisons: a real difference of this many standard errors fails.
SIGMAS = 5.0
# A batch counts as mixed when its drawn lam is below 1 - MIXED_BELOW. timm
# skips a batch whose lam is exactly 1; in float32 a Beta(0.2, 0.2) draw is
# exactly 1 in about 1% of batches (float64: rarely), with no visible effect
# either way, so the statistics treat lam within 1e-6 of 1 as "not mixed".
MIXED_BELOW = 1e-6


# Many small programs compiled once each: XLA's optimisation passes would
# dominate (the draws are vmapped over DRAWS keys and run in milliseconds).
pytestmark = pytest.mark.usefixtures('fast_compile')


@pytest.fixture(scope='module')
def fx():
  with open(os.path.join(FIXTURES, 'mixup.json')) as f:
    meta = json.load(f)
  return dict(np.load(os.path.join(FIXTURES, 'mixup.npz'))), meta


def _timm_params(case) -> mixup.MixParams:
  return mixup.MixParams(lam=jnp.float32(case['lam']),
                         use_cutmix=jnp.bool_(case['use_cutmix']),
                         box=tuple(jnp.int32(v) for v in case['box']),
                         sampled_lam=jnp.float32(case['sampled_lam']))


def test_apply_mix_with_timms_draws_gives_timms_batch(fx):
  arrays, meta = fx
  names = set()
  for case in meta['cases']:
    spec = mixup.MixupSpec(**case['spec'])
    targets = losses.smooth_labels(arrays['labels'], meta['num_classes'],
                                   spec.label_smoothing)
    images, targets = jax.jit(mixup.apply_mix)(arrays['images'], targets,
                                               _timm_params(case))
    name = case['name']
    # float32 rounding: timm keeps lam in float64 until the multiply.
    np.testing.assert_allclose(images, arrays[f'{name}/images'], rtol=1e-6, atol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(targets, arrays[f'{name}/targets'], rtol=1e-6, atol=1e-7,
                               err_msg=name)
    if case['use_cutmix']:  # Pasted pixels are copies: exact.
      np.testing.assert_array_equal(images, arrays[f'{name}/images'], err_msg=name)
    names.add(name)
  assert {'mixup', 'cutmix', 'cutmix_uncorrected', 'cutmix_minmax', 'switch_to_mixup',
          'switch_to_cutmix', 'not_applied'} <= names
  # The fixtures include a box clipped by the border, where correct_lam matters.
  by_name = {c['name']: c for c in meta['cases']}
  assert by_name['cutmix']['lam'] != by_name['cutmix_uncorrected']['lam']


def test_mix_batch_without_a_method_only_smooths_labels(fx):
  arrays, meta = fx
  spec = mixup.MixupSpec(mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.2)
  assert not spec.enabled
  images, targets = mixup.mix_batch(jax.random.key(0), arrays['images'], arrays['labels'],
                                    spec, meta['num_classes'])
  np.testing.assert_array_equal(images, arrays['images'])
  np.testing.assert_array_equal(
      targets, losses.smooth_labels(arrays['labels'], meta['num_classes'], 0.2))


def draw_stats(use_cutmix, sampled_lam, lam, box_h, box_w) -> dict:
  """experiments/recipe_parity.py's summary of timm's draws, for ours."""
  applied = np.asarray(sampled_lam, np.float64) < 1 - MIXED_BELOW
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


_DRAW_CACHE = {}


def _draws(spec: mixup.MixupSpec, hw) -> dict[str, np.ndarray]:
  """DRAWS samples of our parameters from a fixed key, as numpy arrays."""
  if (spec, hw) not in _DRAW_CACHE:
    keys = jax.random.split(jax.random.key(7), DRAWS)
    p = jax.jit(jax.vmap(lambda k: mixup.sample_params(k, spec, hw)))(keys)
    y0, y1, x0, x1 = (np.asarray(v) for v in p.box)
    _DRAW_CACHE[spec, hw] = dict(
        lam=np.asarray(p.lam), sampled_lam=np.asarray(p.sampled_lam),
        use_cutmix=np.asarray(p.use_cutmix), y0=y0, y1=y1, x0=x0, x1=x1)
  return _DRAW_CACHE[spec, hw]


def _assert_same(name, ours, theirs, se):
  assert abs(ours - theirs) <= SIGMAS * se, (
      f'{name}: ours {ours:.5f}, timm {theirs:.5f}, {abs(ours - theirs) / se:.1f} standard '
      'errors apart')


@pytest.mark.parametrize('which', ['deit', 'uncorrected', 'minmax'])
def test_draws_are_distributed_as_timms(fx, which):
  _, meta = fx
  theirs = meta['stats'][which]
  spec = mixup.MixupSpec(**theirs['spec'])
  d = _draws(spec, tuple(theirs['image_hw']))
  ours = draw_stats(d['use_cutmix'], d['sampled_lam'], d['lam'], d['y1'] - d['y0'],
                    d['x1'] - d['x0'])
  n_ours, n_theirs = ours['n'], theirs['n']
  for key in ('p_applied', 'p_cutmix_given_applied'):
    p = (ours[key] + theirs[key]) / 2
    se = np.sqrt(p * (1 - p) * (1 / n_ours + 1 / n_theirs)) + 1e-12
    _assert_same(key, ours[key], theirs[key], se)
  compared = 0
  for key in ('mixup_lam', 'cutmix_sampled_lam', 'cutmix_lam', 'cutmix_box_h',
              'cutmix_box_w'):
    a, b = ours[key], theirs[key]
    assert (a['n'] == 0) == (b['n'] == 0), key
    if not a['n']:
      continue
    se_mean = np.sqrt(a['var'] / a['n'] + b['var'] / b['n'])
    _assert_same(f'{key} mean', a['mean'], b['mean'], se_mean)
    se_var = np.sqrt(max(a['m4'] - a['var'] ** 2, 0) / a['n']
                     + max(b['m4'] - b['var'] ** 2, 0) / b['n'])
    _assert_same(f'{key} variance', a['var'], b['var'], se_var)
    compared += 1
  assert compared >= 3


def test_draws_follow_the_formulas():
  spec = mixup.MixupSpec(mixup_alpha=0.4, cutmix_alpha=1.5, prob=0.7, switch_prob=0.4)
  h, w = 32, 24
  d = _draws(spec, (h, w))
  n = DRAWS

  def near(name, value, want, se):
    assert abs(value - want) <= SIGMAS * se, f'{name}: {value:.5f} vs {want:.5f}'

  # Mixed: the prob coin came up and the draw is not within MIXED_BELOW of 1,
  # which Beta(a, a) does with probability I_{1 - MIXED_BELOW}(a, a).
  applied = d['sampled_lam'] < 1 - MIXED_BELOW
  cut = d['use_cutmix'] & applied
  below = {a: float(jax.scipy.special.betainc(a, a, 1 - MIXED_BELOW)) for a in (0.4, 1.5)}
  p_mix = 0.7 * (0.6 * below[0.4] + 0.4 * below[1.5])
  near('P(mix)', applied.mean(), p_mix, np.sqrt(p_mix * (1 - p_mix) / n))
  p_cut = 0.4 * below[1.5] / (0.6 * below[0.4] + 0.4 * below[1.5])
  near('P(cutmix | mix)', cut[applied].mean(), p_cut,
       np.sqrt(p_cut * (1 - p_cut) / applied.sum()))
  # No mixing: lam 1, an empty box.
  unmixed = d['sampled_lam'] == 1
  assert (d['lam'][unmixed] == 1).all() and (d['y1'] == d['y0'])[unmixed].all()
  for lam, alpha in ((d['lam'][applied & ~cut], 0.4), (d['sampled_lam'][cut], 1.5)):
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); standard errors of the
    # sample mean and variance from the sample's own moments.
    c = lam - lam.mean()
    var = 1 / (4 * (2 * alpha + 1))
    near(f'Beta({alpha}) mean', lam.mean(), 0.5, np.sqrt(var / lam.size))
    near(f'Beta({alpha}) variance', np.mean(c ** 2), var,
         np.sqrt((np.mean(c ** 4) - np.mean(c ** 2) ** 2) / lam.size))
  # CutMix: the corrected lam is 1 - box area / image area, exactly.
  bh, bw = (d['y1'] - d['y0'])[cut], (d['x1'] - d['x0'])[cut]
  np.testing.assert_allclose(d['lam'][cut], 1 - bh * bw / (h * w), rtol=0, atol=1e-7)
  # An unclipped box has sides int(H sqrt(1 - lam)) x int(W sqrt(1 - lam)):
  # its area is 1 - lam of the image, up to the truncation to whole pixels.
  ratio = np.sqrt(np.float32(1) - d['sampled_lam'][cut])
  inside = ((d['y0'] > 0) & (d['y1'] < h) & (d['x0'] > 0) & (d['x1'] < w))[cut]
  assert 0.05 < inside.mean() < 0.9
  np.testing.assert_array_equal(bh[inside], np.floor(np.float32(h) * ratio[inside]))
  np.testing.assert_array_equal(bw[inside], np.floor(np.float32(w) * ratio[inside]))
  area = (bh * bw / (h * w))[inside]
  r = ratio[inside].astype(np.float64)
  assert (area <= r ** 2 + 1e-6).all()
  assert (area > np.maximum(r - 1 / h, 0) * np.maximum(r - 1 / w, 0) - 1e-6).all()
  # Clipping only shrinks the box: the corrected lam is at least the drawn one.
  assert (d['lam'][cut] >= d['sampled_lam'][cut] - 1e-6).all()
  assert (d['lam'][cut] > d['sampled_lam'][cut] + 0.01).mean() > 0.1


def test_minmax_boxes_are_inside_with_sides_in_range():
  spec = mixup.MixupSpec(mixup_alpha=0.0, cutmix_minmax=(0.25, 0.75))
  h, w = 20, 12
  d = _draws(spec, (h, w))
  assert d['use_cutmix'].all()
  bh, bw = d['y1'] - d['y0'], d['x1'] - d['x0']
  assert set(np.unique(bh)) == set(range(5, 15)) and set(np.unique(bw)) == set(range(3, 9))
  assert (d['y0'] >= 0).all() and (d['y1'] <= h).all()
  assert (d['x0'] >= 0).all() and (d['x1'] <= w).all()
  assert d['y0'].min() == 0 and (d['y1'] == h).any()
  np.testing.assert_allclose(d['lam'], 1 - bh * bw / (h * w), rtol=0, atol=1e-7)


@pytest.mark.parametrize('kwargs,match', [
    (dict(mixup_alpha=-0.2), 'mixup_alpha=-0.2 must be a number >= 0'),
    (dict(cutmix_alpha=float('nan')), 'cutmix_alpha=nan must be a number >= 0'),
    (dict(prob=1.5), r'prob=1.5 must be a probability in \[0, 1\]'),
    (dict(switch_prob=-0.1), r'switch_prob=-0.1 must be a probability in \[0, 1\]'),
    (dict(label_smoothing=1.0), r'label_smoothing=1.0 must be in \[0, 1\)'),
    (dict(cutmix_minmax=(0.8, 0.2)), r'cutmix_minmax=\(0.8, 0.2\) must be None or'),
    (dict(cutmix_minmax=(0.0, 0.5)), 'with 0 < min < max <= 1'),
    (dict(cutmix_minmax=(0.5, 1.5)), 'with 0 < min < max <= 1'),
    (dict(cutmix_minmax=(0.5,)), 'must be None or'),
    (dict(cutmix_minmax=0.5), 'cutmix_minmax=0.5 must be None or'),
    (dict(correct_lam=1), 'correct_lam=1 must be True or False'),
])
def test_bad_settings_raise_a_one_line_config_error(kwargs, match):
  with pytest.raises(ConfigError, match=match) as err:
    mixup.MixupSpec(**kwargs)
  assert '\n' not in str(err.value)


def test_a_spec_from_a_config_file_is_hashable():
  # JSON and ConfigDicts give lists; the spec is a static jit argument.
  spec = mixup.MixupSpec(cutmix_minmax=[0.2, 0.8])
  assert spec.cutmix_minmax == (0.2, 0.8) and hash(spec) == hash(
      mixup.MixupSpec(cutmix_minmax=(0.2, 0.8)))


def test_minmax_too_narrow_for_the_image_is_a_config_error():
  spec = mixup.MixupSpec(cutmix_minmax=(0.5, 0.6))
  with pytest.raises(ConfigError, match='leaves no box size for 4x4 images'):
    mixup.sample_params(jax.random.key(0), spec, (4, 4))


def test_eight_devices_give_exactly_the_one_device_batch(child_env):
  out = subprocess.run([sys.executable, __file__, 'multidevice'], cwd=os.path.dirname(HERE),
                       env=child_env(XLA_FLAGS='--xla_force_host_platform_device_count=8'),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and 'multidevice OK' in out.stdout, (
      out.stdout[-3000:] + out.stderr[-3000:])


def _check_multidevice():
  """Runs in the subprocess: shard_map over meshes of 8 devices vs 1 device.

  The sampler is the expensive part to compile, so it is compiled twice:
  once on one device (the reference, also used to find keys of each kind)
  and once inside the (2, 4) mesh's mix_batch; the other layouts run
  apply_mix with the reference's parameters.
  """
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  from resnet_jax import parallel

  assert jax.device_count() == 8
  axes = parallel.DATA_AXES
  spec = mixup.MixupSpec(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.8, switch_prob=0.5)
  batch, h, w, c, num_classes = 16, 8, 6, 3, 10
  images = jax.random.normal(jax.random.key(1), (batch, h, w, c))
  labels = jax.random.randint(jax.random.key(2), (batch,), 0, num_classes)

  @jax.jit
  def one_device(key, x, y):
    params = mixup.sample_params(key, spec, (h, w))
    return params, mixup.mix_batch(key, x, y, spec, num_classes)

  # One key of each kind: Mixup, CutMix with a non-empty box, no mixing.
  want, params = {}, {}
  for key in jax.random.split(jax.random.key(3), 64):
    p, out = one_device(key, images, labels)
    y0, y1, x0, x1 = (int(v) for v in p.box)
    kind = ('none' if p.lam == 1 else 'mixup' if not p.use_cutmix
            else 'cutmix' if (y1 - y0) * (x1 - x0) else 'empty box')
    if kind not in want:
      want[kind], params[kind] = (key, out), p
  assert {'none', 'mixup', 'cutmix'} <= set(want), set(want)

  # The 1-device result itself: the partner of row i is row B-1-i.
  x = np.asarray(images)
  lam = np.float32(params['mixup'].lam)
  np.testing.assert_allclose(want['mixup'][1][0], lam * x + (1 - lam) * x[::-1],
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(want['none'][1][0], x)
  y0, y1, x0, x1 = (int(v) for v in params['cutmix'].box)
  pasted = x.copy()
  pasted[:, y0:y1, x0:x1] = x[::-1, y0:y1, x0:x1]
  np.testing.assert_array_equal(want['cutmix'][1][0], pasted)

  targets = losses.smooth_labels(labels, num_classes, spec.label_smoothing)
  for shape in [(2, 4), (1, 8), (8, 1)]:
    mesh = jax.make_mesh(shape, axes, devices=jax.devices())
    sharded = NamedSharding(mesh, P(axes))
    x8, y8, t8 = (jax.device_put(v, sharded) for v in (images, labels, targets))
    if shape == (2, 4):  # The whole per-device path, as in the train step.
      step = jax.jit(jax.shard_map(
          lambda k, x, y: mixup.mix_batch(k, x, y, spec, num_classes, axis_name=axes),
          mesh=mesh, in_specs=(P(), P(axes), P(axes)), out_specs=(P(axes), P(axes))))
      run = lambda kind: step(want[kind][0], x8, y8)  # pylint: disable=cell-var-from-loop
    else:
      step = jax.jit(jax.shard_map(
          lambda p, x, t: mixup.apply_mix(x, t, p, axis_name=axes),
          mesh=mesh, in_specs=(P(), P(axes), P(axes)), out_specs=(P(axes), P(axes))))
      run = lambda kind: step(params[kind], x8, t8)  # pylint: disable=cell-var-from-loop
    for kind in ('none', 'mixup', 'cutmix'):
      for got, expected, what in zip(run(kind), want[kind][1], ('images', 'targets')):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected),
                                      err_msg=f'mesh {shape}, {kind} {what}')
  print('multidevice OK')


if __name__ == '__main__':
  {'multidevice': _check_multidevice}[sys.argv[1]]()
