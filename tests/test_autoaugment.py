"""Tests of resnet_jax.augment.autoaugment against timm / torchvision fixtures.

tests/fixtures/autoaugment/ was written by timm 1.0 and torchvision 0.28
(experiments/autoaugment_parity.py, in the peer venv); these tests import
neither. Where the fixtures record timm's random draws, `ReplayRng` answers our
sampler's Generator calls with them, so that the whole path (op choice,
probability, magnitude noise and clamping, sign, resampling, the image ops) is
compared bit for bit; a call our sampler makes that timm did not (or in another
order, or with other parameters) fails the replay. Distribution checks compare
our seeded draws with timm's by chi-square, and show they can fail by
rejecting perturbed specs.

Every image comparison is exact: both sides call the same PIL functions with
the same arguments, so any difference is a bug (or a different Pillow: the
failure message names the version the fixtures were written with).
"""

import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from resnet_jax.augment import autoaugment as aa
from resnet_jax.errors import ConfigError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'autoaugment')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_FILL = (124, 116, 104)
MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255
# Chi-square p-values below this fail a distribution check; the seeds are
# fixed, so a check that passes once passes always.
ALPHA = 1e-4


@pytest.fixture(scope='module')
def ref():
  with open(os.path.join(FIXTURES, 'reference.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def arrays():
  with np.load(os.path.join(FIXTURES, 'reference.npz')) as data:
    return dict(data)


def _pillow_note(ref):
  return (f'(fixtures written with Pillow {ref["versions"]["pillow"]}, running '
          f'{Image.__version__}; regenerate: experiments/autoaugment_parity.py)')


class ReplayRng:
  """Answers Generator calls with draws timm / torchvision logged, in order.

  Log entries: ['np_choice', n, size, replace, p, indices] (numpy's choice in
  RandAugment), ['random', u], ['gauss', mu, sigma, x], ['uniform', a, b, x],
  ['randint', a, b, k] (Python's inclusive randint), ['choice', n, k]
  (Python's random.choice, as an index), ['randint', n, k] (torch.randint(n)).
  `normals` answer standard_normal (timm's torch normal_ draws).
  """

  def __init__(self, log, normals=()):
    self.log = list(log)
    self.normals = list(normals)

  def _next(self, kind):
    assert self.log, f'our sampler drew {kind!r} after timm\'s last draw'
    entry = self.log.pop(0)
    assert entry[0] == kind, f'our sampler drew {kind!r} where timm drew {entry}'
    return entry

  def choice(self, a, size, replace=True, p=None):
    e = self._next('np_choice')
    assert (e[1], e[2], e[3]) == (a, size, replace), (e, a, size, replace)
    if p is None:
      assert e[4] is None
    else:
      np.testing.assert_allclose(p, e[4], rtol=0, atol=1e-15)
    return np.array(e[5])

  def random(self):
    return self._next('random')[1]

  def normal(self, loc, scale):
    e = self._next('gauss')
    assert (e[1], e[2]) == (loc, scale), (e, loc, scale)
    return e[3]

  def uniform(self, low, high):
    e = self._next('uniform')
    assert (e[1], e[2]) == (low, high), (e, low, high)
    return e[3]

  def integers(self, low, high=None):
    assert self.log, 'our sampler drew an integer after timm\'s last draw'
    e = self.log.pop(0)
    if e[0] == 'choice' or (e[0] == 'randint' and len(e) == 3):
      assert high is None and e[1] == low, (e, low, high)
      return e[2]
    assert e[0] == 'randint' and (e[1], e[2] + 1) == (low, high), (e, low, high)
    return e[3]

  def standard_normal(self, shape, dtype=np.float64):
    del dtype  # timm's draws, as recorded (float32).
    value = self.normals.pop(0)
    assert value.shape == tuple(shape), (value.shape, shape)
    return value


class RecordingRng:
  """A Generator that also keeps the op indices each RandAugment draw chose."""

  def __init__(self, seed):
    self._rng = np.random.default_rng(seed)
    self.chosen = None

  def choice(self, *args, **kwargs):
    self.chosen = self._rng.choice(*args, **kwargs)
    return self.chosen

  def __getattr__(self, name):
    return getattr(self._rng, name)


def _digest(image):
  return hashlib.sha256(np.ascontiguousarray(np.asarray(image), np.uint8).tobytes()).hexdigest()


def _check_case(case, got, stored, ref):
  got = np.asarray(got)
  if case['stored'] is not None:
    expected = stored[case['stored']]
    diff = np.abs(got.astype(int) - expected)
    assert diff.max() == 0, (f'{case}: {np.mean(diff > 0):.1%} of values differ, '
                             f'by up to {diff.max()} {_pillow_note(ref)}')
  assert _digest(got) == case['sha256'], f'{case}: output differs {_pillow_note(ref)}'


# ----------------------------------------------------------------------------
# The module itself.
# ----------------------------------------------------------------------------


def test_imports_numpy_and_pil_only():
  # Loaded by path, so that the resnet_jax.data package (jax) is not imported.
  path = os.path.join(ROOT, 'resnet_jax', 'augment', 'autoaugment.py')
  code = (
      'import importlib.util, sys\n'
      f'spec = importlib.util.spec_from_file_location("a", {path!r})\n'
      'spec.loader.exec_module(importlib.util.module_from_spec(spec))\n'
      'heavy = ("jax", "flax", "tensorflow", "torch", "timm")\n'
      'print(sorted(m for m in heavy if m in sys.modules))\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True, cwd=ROOT, env={**os.environ, 'PYTHONPATH': ROOT})
  assert out.stdout.strip() == '[]'


def test_randomness_only_from_the_generator(arrays):
  image = Image.fromarray(arrays['cifar'])
  spec = aa.parse_rand_augment('rand-m9-n4-mstd0.5-inc1-p0.9')

  def run(seed):
    rng = np.random.default_rng([seed, 17])
    out = []
    for _ in range(5):
      out.append(np.asarray(aa.rand_augment(image, rng, spec, fill=IMAGENET_FILL)))
      out.append(np.asarray(aa.trivial_augment_wide(image, rng)))
      out.append(aa.random_erasing(arrays['cifar'], rng, probability=0.7, mode='pixel',
                                   mean=MEAN, std=STD, max_count=2))
    return out

  def global_states():
    _, keys, pos, *_ = np.random.get_state()
    return random.getstate(), keys.tolist(), pos

  random.seed(1)
  np.random.seed(1)
  before = global_states()
  first = run(0)
  assert global_states() == before  # Neither global generator was drawn from.
  random.seed(2)
  np.random.seed(2)
  second = run(0)
  assert all(np.array_equal(a, b) for a, b in zip(first, second))
  assert not all(np.array_equal(a, b) for a, b in zip(first, run(1)))


# ----------------------------------------------------------------------------
# RandAugment.
# ----------------------------------------------------------------------------


def test_op_sets_are_timms(ref):
  sets = ref['op_sets']
  assert list(aa.RAND_TRANSFORMS) == sets['rand']
  assert list(aa.RAND_INCREASING_TRANSFORMS) == sets['rand_increasing']
  assert list(aa.RAND_3A) == sets['rand_3a']
  assert [list(x) for x in aa.RAND_WEIGHTED_3A.items()] == sets['weighted_3a']
  assert [list(x) for x in aa.RAND_WEIGHTED_0.items()] == sets['weighted_0']


@pytest.mark.parametrize('config', [
    'rand', 'rand-m9-mstd0.5-inc1', 'rand-mstd0.5-inc1-m9', 'rand-m9-mstd0.5', 'rand-n3-m7',
    'rand-m15-mmax20-mstd101', 'rand-m12-mmax15-mstd100', 'rand-p1.0-mstd0',
    'rand-m9-tweights', 'rand-m9-inc1-tweights', 'rand-t3a', 'rand-m10-n1-t3aw-inc1',
    'rand-inc0-m6-n1-p0.25', 'rand-n0', 'rand-m0-mstd1.5e0'])
def test_parse_matches_timm(ref, config):
  timm = ref['parses'][config]
  spec = aa.parse_rand_augment(config)
  assert list(spec.ops) == timm['names']
  assert (spec.num_layers, spec.prob, spec.magnitude, spec.magnitude_std, spec.magnitude_max) == (
      timm['num_layers'], timm['prob'], timm['magnitude'], timm['magnitude_std'],
      timm['magnitude_max'])
  if timm['weights'] is None:
    assert spec.choice_weights is None
  else:
    np.testing.assert_array_equal(spec.choice_weights, timm['weights'])


@pytest.mark.parametrize('config,bad_part', [
    ('', "starts with ''"),
    ('rnd-m9', "'rnd'"),
    ('rand-m9-x3', "'x3'"),
    ('rand-m9-mstd', "'mstd'"),
    ('rand-m9.5', "'m9.5'"),
    ('rand-n2x', "'n2x'"),
    ('rand-mstd0.5.1', "'mstd0.5.1'"),
    ('rand--m9', 'empty section'),
    ('rand-m9-', 'empty section'),
    ('rand-m9-w0', "'w0'"),
    ('rand-m9-m7', "'m7' repeats"),
    ('rand-tfoo', "'tfoo'"),
    ('rand-p1.5', "'p1.5'"),
    ('rand-inc2', "'inc2'"),
    ('rand-mmax0', "'mmax0'"),
    ('rand-mmax12.5', "'mmax12.5'"),
    ('rand-n16-tweights', 'n16'),
    ('RAND-m9', "'RAND'"),
])
def test_bad_config_strings(config, bad_part):
  with pytest.raises(ConfigError) as info:
    aa.parse_rand_augment(config)
  message = str(info.value)
  assert bad_part in message
  assert '\n' not in message
  assert "'rand-m9-mstd0.5-inc1'" in message  # A valid example.
  aa.parse_rand_augment('rand-m9-mstd0.5-inc1')


def test_ops_bit_exact(ref, arrays):
  image = Image.fromarray(arrays['synthetic'])
  # Every op function is covered (the Increasing variants share them).
  assert {aa.OPS[case['op']].fn for case in ref['ra_op_cases']} == {
      op.fn for op in aa.OPS.values()}
  for case in ref['ra_op_cases']:
    op = aa.OPS[case['op']]
    if case['resample'] is not None:
      got = op.fn(image, *case['args'], fill=tuple(case['fill']),
                  resample=aa._INTERPOLATIONS[case['resample']])  # pylint: disable=protected-access
    else:
      got = op.fn(image, *case['args'])
    _check_case(case, got, arrays['ra_ops'], ref)


def test_posterize_to_zero_bits_is_black(ref, arrays):
  # timm's 0 bits under Pillow 13 raises (Pillow refuses them); ours gives
  # Pillow < 13's (and TensorFlow's) black image, so that training goes on.
  assert ref['timm_posterize_zero_raises']
  image = Image.fromarray(arrays['synthetic'])
  assert not np.asarray(aa.posterize(image, 0)).any()
  assert aa.level_to_arg('PosterizeIncreasing', 10) == (0,)
  assert aa.level_to_arg('Posterize', 2.4) == (0,)
  assert aa.posterize(image, 8) is image


def test_level_to_arg_is_timms(ref):
  assert set(ref['level_tables']) == set(aa.OPS)
  for name, rows in ref['level_tables'].items():
    for level, negate, args in rows:
      assert list(aa.level_to_arg(name, level, negate=negate)) == args, (name, level, negate)


def test_magnitude_noise_and_clamp_are_timms(ref):
  # timm's AugmentOp with scripted draws: the raw magnitude its gauss/uniform
  # returned -> the op's arguments (clamped to [0, mmax or 10], signed).
  for config, table in ref['clamp_tables'].items():
    spec = aa.parse_rand_augment(config)
    assert list(spec.ops) == table['ops']
    single = dataclasses.replace(spec, num_layers=1)
    for index, raw, negate, args in table['rows']:
      log = [['np_choice', len(spec.ops), 1, spec.choice_weights is None,
              None if spec.choice_weights is None else list(spec.choice_weights), [index]]]
      if spec.prob < 1.0:
        log.append(['random', 0.0])  # Applied: timm skips when random() > prob.
      if table['draw'] is not None:
        log.append(table['draw'] + [raw])
      log.append(['random', 0.9 if negate else 0.1])  # Sign (signed ops only).
      log.append(['choice', 2, 0])  # Bilinear (geometric ops only).
      draws = aa.sample_rand_augment(ReplayRng(log), single)
      assert [list(d.args) for d in draws] == [args], (config, table['ops'][index], raw, negate)


def test_pipelines_replay_timms_draws(ref, arrays):
  image = Image.fromarray(arrays['cifar'])
  for record, expected in zip(ref['ra_pipelines'], arrays['ra_pipelines'], strict=True):
    rng = ReplayRng(record['log'])
    got = aa.rand_augment(image, rng, aa.parse_rand_augment(record['config']),
                          fill=IMAGENET_FILL, interpolation=record['interpolation'])
    assert not rng.log, f'{record["config"]} seed {record["seed"]}: timm drew more: {rng.log}'
    assert np.array_equal(np.asarray(got), expected), (
        f'{record["config"]} seed {record["seed"]} {_pillow_note(ref)}')


def _chi2_p(a, b):
  """p-value that count vectors a and b come from one distribution."""
  table = np.array([a, b], np.float64)
  table = table[:, table.sum(0) > 0]
  if table.shape[1] < 2:
    return 1.0
  return stats.chi2_contingency(table)[1]


def _our_tables(spec, timm, draws, seed):
  """Our draws binned as timm's statistics were ([(table name, ours, timm's)])."""
  rng = RecordingRng(seed)
  choice = np.zeros((spec.num_layers, len(spec.ops)), np.int64)
  repeats, applied = np.zeros(2, np.int64), np.zeros(2, np.int64)
  args = {}
  for _ in range(draws):
    ops = aa.sample_rand_augment(rng, spec)
    chosen = list(rng.chosen)
    for layer, index in enumerate(chosen):
      choice[layer, index] += 1
    repeats[int(len(set(chosen)) < len(chosen))] += 1
    applied += [len(ops), len(chosen) - len(ops)]
    for op in ops:
      if op.args:
        args.setdefault(op.name, []).append(op.args[0])
  tables = [(f'choice, layer {k}', choice[k], timm['choice'][k]) for k in range(spec.num_layers)]
  tables += [('repeated op', repeats, timm['repeats']), ('applied', applied, timm['applied'])]
  for name, binning in timm['args'].items():
    values = np.asarray(args.get(name, []), np.float64)
    if 'edges' in binning:
      counts = np.bincount(np.searchsorted(binning['edges'], values, side='right'), minlength=10)
      tables.append((f'{name} argument', counts, binning['counts']))
    else:
      known = np.array(binning['categories'])
      match = np.isclose(values[:, None], known[None, :], rtol=0, atol=1e-9)
      counts = list(match.sum(0)) + [int(np.sum(~match.any(1)))]
      tables.append((f'{name} argument', counts, binning['counts'] + [0]))
  assert set(args) == set(timm['args']), 'ops with arguments differ'
  return tables


def test_choice_and_magnitude_distributions_are_timms(ref):
  for k, timm in enumerate(ref['statistics']):
    spec = aa.parse_rand_augment(timm['config'])
    assert list(spec.ops) == timm['names']
    draws = 20000 if spec.choice_weights is None else 8000
    for name, ours, theirs in _our_tables(spec, timm, draws, seed=k):
      p = _chi2_p(ours, theirs)
      assert p > ALPHA, f'{timm["config"]}: {name}: p = {p:.2g}\nours {list(ours)}\ntimm {theirs}'


@pytest.mark.parametrize('change', [dict(prob=0.55), dict(magnitude_std=0.6), dict(magnitude=8)])
def test_distribution_check_rejects_a_different_spec(ref, change):
  # The check above has the power to fail: small changes to timm's main
  # recipe are rejected.
  timm = ref['statistics'][0]
  spec = dataclasses.replace(aa.parse_rand_augment(timm['config']), **change)
  p = min(_chi2_p(ours, theirs) for _, ours, theirs in _our_tables(spec, timm, 20000, seed=0))
  assert p < 1e-6


# ----------------------------------------------------------------------------
# TrivialAugment-wide (torchvision's).
# ----------------------------------------------------------------------------


def test_trivial_augment_bins_are_torchvisions(ref):
  for num_bins, table in ref['ta_bins'].items():
    ours = aa.trivial_augment_bins(int(num_bins))
    assert list(ours) == list(table) == list(aa.TRIVIAL_AUGMENT_OPS)
    for name, (magnitudes, signed) in ours.items():
      assert [None if magnitudes is None else list(magnitudes), signed] == table[name], name


def test_trivial_augment_ops_bit_exact(ref, arrays):
  image = Image.fromarray(arrays['synthetic'])
  assert {case['op'] for case in ref['ta_op_cases']} == set(aa.TRIVIAL_AUGMENT_OPS)
  for case in ref['ta_op_cases']:
    got = aa.apply_trivial_augment_op(image, case['op'], case['magnitude'],
                                      fill=tuple(case.get('fill') or (0, 0, 0)),
                                      interpolation=case.get('interpolation', 'nearest'))
    _check_case(case, got, arrays['ta_ops'], ref)


def test_trivial_augment_replays_torchvisions_draws(ref, arrays):
  image = Image.fromarray(arrays['cifar'])
  for record, expected in zip(ref['ta_pipelines'], arrays['ta_pipelines'], strict=True):
    rng = ReplayRng(record['log'])
    got = aa.trivial_augment_wide(image, rng, fill=tuple(record['fill'] or (0, 0, 0)))
    assert not rng.log
    assert np.array_equal(np.asarray(got), expected), f'seed {record["seed"]} {_pillow_note(ref)}'


def test_trivial_augment_draws_are_uniform():
  # torchvision: op uniform over 14, bin uniform over 31, sign a fair coin.
  rng = np.random.default_rng(0)
  bins = aa.trivial_augment_bins(31)
  ops, levels, signs = [], [], []
  for _ in range(20000):
    name, magnitude = aa.sample_trivial_augment(rng)
    ops.append(aa.TRIVIAL_AUGMENT_OPS.index(name))
    magnitudes, signed = bins[name]
    if name == 'Rotate':
      levels.append(magnitudes.index(abs(magnitude)))
    if signed and magnitude:
      signs.append(magnitude < 0)
    if not signed and magnitudes is not None:
      assert magnitude in magnitudes
  assert stats.chisquare(np.bincount(ops, minlength=14)).pvalue > ALPHA
  assert stats.chisquare(np.bincount(levels, minlength=31)).pvalue > ALPHA
  assert stats.binomtest(sum(signs), len(signs)).pvalue > ALPHA


# ----------------------------------------------------------------------------
# Random erasing (timm's, on uint8 before normalisation).
# ----------------------------------------------------------------------------


def _erase_kwargs(case):
  return dict(probability=case['probability'], min_area=case['min_area'],
              max_area=case['max_area'], min_aspect=case['min_aspect'],
              max_count=case['max_count'])


def test_erasing_boxes_replay_timms(ref, arrays):
  height, width = arrays['synthetic'].shape[:2]
  for case in ref['erasing']:
    rng = ReplayRng(case['log'])
    boxes = aa.sample_erasing_boxes(rng, height, width, **_erase_kwargs(case))
    assert [list(b) for b in boxes] == case['boxes'], case['seed']
    assert not rng.log


def test_erasing_fill_given_timms_boxes_and_draws(ref, arrays):
  # timm writes z (normalised; 0 for 'const'); we write round(mean + std * z)
  # clipped to uint8. Normalised, ours is within half a level of z, or at the
  # end of the uint8 range that z lies beyond.
  image = arrays['synthetic']
  low, high = -MEAN / STD, (255 - MEAN) / STD
  for case in ref['erasing']:
    z = [arrays[f'{case["key"]}_box{j}'].astype(np.float64) for j in range(len(case['boxes']))]
    rng = ReplayRng(case['log'], normals=[] if case['mode'] == 'const' else z)
    got = aa.random_erasing(image, rng, mode=case['mode'], mean=MEAN, std=STD,
                            **_erase_kwargs(case))
    assert not rng.log and not rng.normals
    expected = (image - MEAN) / STD  # timm's output: boxes written in order.
    for (top, left, h, w), value in zip(case['boxes'], z):
      expected[top:top + h, left:left + w] = value
    ours = (got - MEAN) / STD
    clipped = (expected < low - 0.5 / STD) | (expected > high + 0.5 / STD)
    half_level = np.broadcast_to(0.5 / STD, expected.shape)
    # 1e-6: float32 arithmetic near a rounding tie.
    assert np.all(np.abs(ours - expected)[~clipped] <= half_level[~clipped] + 1e-6), case['seed']
    np.testing.assert_allclose(ours[clipped], np.clip(expected, low, high)[clipped], rtol=1e-6)
    if not case['boxes']:
      assert got is image
    outside = np.ones(image.shape[:2], bool)
    for top, left, h, w in case['boxes']:
      outside[top:top + h, left:left + w] = False
    assert np.array_equal(got[outside], image[outside])


def test_erasing_difference_from_timm_is_small():
  # The one documented difference (uint8 instead of float): rounding moves a
  # normal draw by under half a level, and clipping only touches the tails.
  z = np.random.default_rng(0).standard_normal((200_000, 1, 3))
  out = np.zeros((200_000, 1, 3), np.uint8)
  aa.erase_box(out, (0, 0, 200_000, 1), mode='pixel', mean=MEAN, std=STD, noise=z)
  diff = np.abs((out - MEAN) / STD - z)
  clipped = (MEAN + STD * z < -0.5) | (MEAN + STD * z > 255.5)
  assert diff[~clipped].max() <= 0.5 / STD.min() + 1e-6
  assert diff[~clipped].mean() < 0.005
  assert 0.02 < clipped.mean() < 0.045
  const = np.zeros((1, 1, 3), np.uint8)
  aa.erase_box(const, (0, 0, 1, 1), mode='const', mean=MEAN, std=STD)
  assert np.all(np.abs((const - MEAN) / STD) <= 0.5 / STD)
  assert const.tolist() == [[[124, 116, 104]]]


def test_erasing_box_rules():
  rng = np.random.default_rng(0)
  counts, areas, aspects, erased = [], [], [], 0
  for _ in range(4000):
    boxes = aa.sample_erasing_boxes(rng, 60, 80, probability=0.5, min_count=1, max_count=3)
    erased += bool(boxes)
    if boxes:
      counts.append(len(boxes))
      for _, _, h, w in boxes:
        assert 0 < h < 60 and 0 < w < 80
        areas.append(h * w * len(boxes) / (60 * 80))
        aspects.append(h / w)
  assert stats.binomtest(erased, 4000, 0.5).pvalue > ALPHA
  # Every box fits at this size, so the count is uniform in [1, 3].
  assert stats.chisquare(np.bincount(counts)[1:]).pvalue > ALPHA
  # Area fraction uniform in [0.02, 1/3] (per count), aspect log-uniform in
  # [0.3, 1/0.3]; loose bounds for the integer rounding of h and w.
  assert 0.01 < min(areas) and max(areas) < 0.40
  assert abs(np.mean(areas) - (0.02 + 1 / 3) / 2) < 0.01
  assert 0.2 < min(aspects) and max(aspects) < 1 / 0.2
  assert abs(np.mean(np.log(aspects))) < 0.05


def test_erasing_arguments():
  image = np.zeros((8, 8, 3), np.uint8)
  rng = np.random.default_rng(0)
  with pytest.raises(ConfigError, match='mode'):
    aa.random_erasing(image, rng, probability=1, mode='noise', mean=MEAN, std=STD)
  with pytest.raises(ConfigError, match='uint8 units'):
    aa.random_erasing(image, rng, probability=1, mode='const', mean=MEAN / 255, std=STD / 255)
  assert aa.random_erasing(image, rng, probability=0, mode='const', mean=MEAN, std=STD) is image
