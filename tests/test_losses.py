"""resnet_jax.losses against timm 1.0.31 (fixtures from experiments/recipe_parity.py)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import losses
from resnet_jax.errors import ConfigError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'recipes')


@pytest.fixture(scope='module')
def fx():
  with open(os.path.join(FIXTURES, 'losses.json')) as f:
    meta = json.load(f)
  return dict(np.load(os.path.join(FIXTURES, 'losses.npz'))), meta


def test_smooth_labels_equal_timms_one_hot_bit_for_bit(fx):
  arrays, _ = fx
  c = arrays['logits'].shape[1]
  for s in (0.0, 0.1, 0.3):
    got = np.asarray(losses.smooth_labels(arrays['labels'], c, s))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, arrays[f'smooth/{s}'])


def test_soft_target_and_label_smoothing_cross_entropy_match_timm(fx):
  arrays, meta = fx
  logits, labels = arrays['logits'], arrays['labels']
  per_example = losses.softmax_cross_entropy(logits, arrays['soft_targets'])
  assert per_example.shape == (8,) and per_example.dtype == jnp.float32
  np.testing.assert_allclose(per_example, arrays['soft_ce_per_example'], rtol=1e-6)
  np.testing.assert_allclose(jnp.mean(per_example), meta['values']['soft_target_ce'],
                             rtol=1e-6)
  smoothed = losses.smooth_labels(labels, logits.shape[1], 0.1)
  np.testing.assert_allclose(jnp.mean(losses.softmax_cross_entropy(logits, smoothed)),
                             meta['values']['label_smoothing_ce_0.1'], rtol=1e-6)


def test_binary_cross_entropy_matches_timm(fx):
  arrays, meta = fx
  logits = arrays['logits']
  for name, case in meta['bce_cases'].items():
    targets = arrays['labels'] if case['targets'] == 'labels' else arrays['soft_targets']
    per_example = losses.binary_cross_entropy(
        logits, targets, smoothing=case['smoothing'],
        target_threshold=case['target_threshold'])
    assert per_example.shape == (8,), name
    np.testing.assert_allclose(jnp.mean(per_example), meta['values'][f'bce/{name}'],
                               rtol=1e-6, err_msg=name)
  # Thresholding comes after smoothing: smoothed one-hot labels thresholded at
  # 0.2 are plain one-hot again. The other cases all differ.
  values = meta['values']
  assert values['bce/hard_threshold'] == values['bce/hard']
  assert len({round(v, 6) for k, v in values.items() if k.startswith('bce/')}) == 4


def test_distillation_matches_the_formula_written_in_torch(fx):
  arrays, meta = fx
  logits, teacher = arrays['logits'], arrays['teacher_logits']
  for t in meta['temperatures']:
    np.testing.assert_allclose(losses.distillation_loss(logits, teacher, t),
                               arrays[f'distill/{t}/per_example'], rtol=1e-6, atol=1e-6)
    grad = jax.grad(lambda z, t=t: jnp.sum(losses.distillation_loss(z, teacher, t)))(logits)
    np.testing.assert_allclose(grad, arrays[f'distill/{t}/grad_sum'], rtol=1e-6, atol=1e-6)


def test_paper_loss_differs_from_timms_kl_task_by_a_constant_only(fx):
  # timm's LogitDistillationTask: mean CE(y, z) + T^2 * KL(teacher || student).
  # Ours (cross-entropy form) is larger by T^2 * H(teacher), with equal gradients.
  arrays, meta = fx
  logits, teacher, labels = arrays['logits'], arrays['teacher_logits'], arrays['labels']
  onehot = jax.nn.one_hot(labels, logits.shape[1])
  for t in meta['temperatures']:
    entropy = -jnp.sum(jax.nn.softmax(teacher / t) * jax.nn.log_softmax(teacher / t), -1)

    def paper_loss(z, t=t):
      return jnp.mean(losses.softmax_cross_entropy(z, onehot)
                      + losses.distillation_loss(z, teacher, t))

    np.testing.assert_allclose(paper_loss(logits) - t * t * jnp.mean(entropy),
                               meta['values'][f'timm_distill/{t}/loss'], rtol=1e-6)
    np.testing.assert_allclose(jax.grad(paper_loss)(logits), arrays[f'timm_distill/{t}/grad'],
                               rtol=1e-6, atol=1e-7)


def test_distillation_gradient_reaches_the_student_only_and_vanishes_at_the_teacher():
  rng = np.random.default_rng(0)
  z, r = rng.standard_normal((2, 4, 5), dtype=np.float32)
  g_teacher = jax.grad(lambda r: jnp.sum(losses.distillation_loss(z, r, 2.0)))(r)
  np.testing.assert_array_equal(g_teacher, 0.0)
  g_student = jax.grad(lambda z: jnp.sum(losses.distillation_loss(z, z + 0.0, 2.0)))(z)
  # d/dz of T^2 CE(softmax(r/T), softmax(z/T)) = T (softmax(z/T) - softmax(r/T)).
  np.testing.assert_allclose(g_student, 0.0, atol=1e-6)


def test_low_precision_logits_give_float32_losses():
  logits = jnp.asarray(np.random.default_rng(0).standard_normal((3, 7)), jnp.bfloat16)
  labels = jnp.array([0, 3, 6])
  targets = losses.smooth_labels(labels, 7, 0.1)
  for out in (losses.softmax_cross_entropy(logits, targets),
              losses.binary_cross_entropy(logits, labels),
              losses.distillation_loss(logits, logits, 2.0)):
    assert out.dtype == jnp.float32 and out.shape == (3,)


@pytest.mark.parametrize('call,match', [
    (lambda: losses.smooth_labels(jnp.zeros(2, jnp.int32), 3, 1.0),
     r'label smoothing=1.0 must be in \[0, 1\)'),
    (lambda: losses.distillation_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0),
     'temperature=0.0 must be > 0'),
])
def test_bad_arguments_say_what_to_use(call, match):
  with pytest.raises(ConfigError, match=match):
    call()


def test_binary_cross_entropy_rejects_targets_of_another_shape():
  with pytest.raises(ValueError, match='fit neither labels'):
    losses.binary_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
