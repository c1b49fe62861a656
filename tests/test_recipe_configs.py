"""The named training recipes (configs/recipe_*.py) hold their published values.

Each recipe config loads, resolves on this 1-device CPU (the whole-config check
every command runs first, and the recipe parts' own), and carries the values of
its source, written out below per recipe with the source they come from. A value
edited in a recipe config fails here: change it in both places, with its source.
Nothing is trained.
"""

import os

import pytest

from resnet_jax import configlib
from resnet_jax import ema as ema_lib
from resnet_jax import models
from resnet_jax import optim
from resnet_jax import specs
from resnet_jax import summary
from resnet_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# torchvision's V1 recipe: pytorch/vision references/classification/README.md (8 GPUs x
# --batch_size 32, --epochs 90, --lr 0.1, --momentum 0.9, --wd 1e-4, --lr-step-size 30,
# --lr-gamma 0.1) and train.py's defaults (SGD, no warmup, Resize(256) + CenterCrop(224)).
TORCHVISION_V1 = {
    'model.name': 'resnet50', 'model.shortcut': 'B', 'image_size': 224, 'eval_resize': 256,
    'batch_size': 256, 'optimizer': 'sgd', 'momentum': 0.9, 'learning_rate': 0.1,
    'weight_decay': 1e-4, 'weight_decay_type': 'l2', 'schedule': 'piecewise',
    'warmup_epochs': 0.0, 'warmup_steps': 0, 'lr_boundaries_epochs': (30.0, 60.0),
    'lr_decay_factor': 0.1, 'num_epochs': 90.0, 'label_smoothing': 0.0, 'loss': 'softmax',
    'mixup_alpha': 0.0, 'model.zero_init_residual': False,
}

# Bag of Tricks (He et al. 2019) sections 3-5 and Table 6, checked against the paper's
# code: dmlc/gluon-cv train_imagenet.py (nag, momentum 0.9, wd 1e-4, --no-wd,
# --temperature 20) and dmlc/web-data gluoncv/logs/classification/imagenet/
# resnet50_v1d{,-mixup}.sh (--lr 0.4, cosine, batch 128 x 8, --warmup-epochs 5,
# --last-gamma, --label-smoothing, --mixup, 120 / 200 epochs).
BAG_OF_TRICKS = {
    'model.name': 'resnet50', 'model.stem': 'deep', 'model.shortcut': 'D',
    'model.bottleneck_stride': 'v1.5', 'model.zero_init_residual': True, 'image_size': 224,
    'eval_resize': 256, 'batch_size': 1024, 'optimizer': 'nesterov', 'momentum': 0.9,
    'learning_rate': 0.4, 'weight_decay': 1e-4, 'weight_decay_type': 'l2',
    'schedule': 'cosine', 'warmup_epochs': 5.0, 'label_smoothing': 0.1, 'loss': 'softmax',
    'mixup_alpha': 0.2, 'cutmix_alpha': 0.0, 'mixup_prob': 1.0, 'num_epochs': 200.0,
    'distill_temperature': 20.0, 'teacher': '',
}
BAG_OF_TRICKS_TEACHER = {  # ResNet-152-D, cosine + label smoothing, no mixup, 120 epochs.
    **BAG_OF_TRICKS, 'model.name': 'resnet152', 'mixup_alpha': 0.0, 'num_epochs': 120.0,
}
BAG_OF_TRICKS_DISTILLED = {**BAG_OF_TRICKS, 'teacher': 'runs/bot_r152d'}

# ResNet strikes back (arXiv 2110.00476) Table 1, as open-mmlab/mmpretrain's
# configs/resnet/resnet50_8xb256-rsb-a{1,2,3}-*_in1k.py, _base_/datasets/
# imagenet_bs256_rsb_a{12,3}.py and _base_/schedules/imagenet_bs2048_rsb.py reproduce it;
# the BCE target threshold 0.2 is timm's --bce-target-thresh; crop ratio 0.95 at test
# gives timm's floor(224 / 0.95) = 235. A1/A2's batch is 2016 (3 x 672), not 2048, for
# the repeated augmentation's 3 copies (the config's docstring says why).
RSB_COMMON = {
    'model.name': 'resnet50', 'model.shortcut': 'B', 'optimizer': 'lamb', 'momentum': 0.9,
    'beta2': 0.999, 'eps': None, 'lamb_max_grad_norm': 1.0, 'weight_decay_type': 'l2',
    'schedule': 'cosine', 'warmup_epochs': 5.0, 'loss': 'bce', 'bce_target_threshold': 0.2,
    'cutmix_alpha': 1.0, 'mixup_prob': 1.0, 'mixup_switch_prob': 0.5, 'ema_decay': 0.0,
    'model.dropout_rate': 0.0, 'random_erasing': 0.0, 'trivial_augment': False,
}
RSB_A1 = {
    **RSB_COMMON, 'num_epochs': 600.0, 'image_size': 224, 'eval_resize': 235,
    'batch_size': 2016, 'learning_rate': 5e-3, 'weight_decay': 0.01, 'label_smoothing': 0.1,
    'mixup_alpha': 0.2, 'rand_augment': 'rand-m7-mstd0.5-inc1', 'repeated_augmentation': 3,
    'model.drop_path_rate': 0.05,
}
RSB_A2 = {
    **RSB_COMMON, 'num_epochs': 300.0, 'image_size': 224, 'eval_resize': 235,
    'batch_size': 2016, 'learning_rate': 5e-3, 'weight_decay': 0.02, 'label_smoothing': 0.0,
    'mixup_alpha': 0.1, 'rand_augment': 'rand-m7-mstd0.5-inc1', 'repeated_augmentation': 3,
    'model.drop_path_rate': 0.05,
}
RSB_A3 = {
    **RSB_COMMON, 'num_epochs': 100.0, 'image_size': 160, 'eval_resize': 168,
    'batch_size': 2048, 'learning_rate': 8e-3, 'weight_decay': 0.02, 'label_smoothing': 0.0,
    'mixup_alpha': 0.1, 'rand_augment': 'rand-m6-mstd0.5-inc1', 'repeated_augmentation': 1,
    'model.drop_path_rate': 0.0,
}

# ResNet-RS (Bello et al. 2021): the authors' tensorflow/tpu models/official/resnet/
# resnet_rs/configs/resnetrs50_i160.yaml (batch 4096, base lr 0.1 per 256, momentum 0.9,
# weight_decay 4e-5, label_smoothing 0.1, moving_average_decay 0.9999, bn_momentum 0,
# dropout 0.25, no drop_connect, randaug 2 x magnitude 10, image_size 160, 109,475
# steps) and TF Model Garden's imagenet_resnetrs50_i160.yaml (sgd, cosine from 1.6,
# 1560 warmup steps = 5 epochs).
RESNET_RS_50 = {
    'model.name': 'resnetrs50', 'model.shortcut': 'D', 'model.zero_init_residual': True,
    'model.bn_momentum': 0.0, 'model.dropout_rate': 0.25, 'model.drop_path_rate': 0.0,
    'image_size': 160, 'eval_resize': 0, 'rand_augment': 'rand-m10-n2-p1.0',
    'batch_size': 4096, 'optimizer': 'sgd', 'momentum': 0.9, 'learning_rate': 1.6,
    'weight_decay': 4e-5, 'weight_decay_type': 'l2', 'schedule': 'cosine',
    'warmup_epochs': 5.0, 'label_smoothing': 0.1, 'loss': 'softmax', 'mixup_alpha': 0.0,
    'ema_decay': 0.9999, 'ema_warmup': True, 'ema_warmup_gamma': 9.0,
    'ema_warmup_power': 1.0, 'num_epochs': 350.0,
}
# resnetrs101_i192.yaml and resnetrs420_i320.yaml: what changes with the model.
RESNET_RS_101_192 = {
    **RESNET_RS_50, 'model.name': 'resnetrs101', 'image_size': 192,
    'rand_augment': 'rand-m15-mmax15-n2-p1.0',
}
RESNET_RS_420_320 = {
    **RESNET_RS_50, 'model.name': 'resnetrs420', 'image_size': 320, 'model.dropout_rate': 0.4,
    'model.drop_path_rate': 0.1, 'rand_augment': 'rand-m15-mmax15-n2-p1.0',
}

RECIPES = {
    'configs/recipe_torchvision_v1.py': TORCHVISION_V1,
    'configs/recipe_bag_of_tricks.py': BAG_OF_TRICKS,
    'configs/recipe_bag_of_tricks.py:depth=152,mixup=false': BAG_OF_TRICKS_TEACHER,
    'configs/recipe_bag_of_tricks.py:teacher=runs/bot_r152d': BAG_OF_TRICKS_DISTILLED,
    'configs/recipe_rsb.py:procedure=A1': RSB_A1,
    'configs/recipe_rsb.py:procedure=A2': RSB_A2,
    'configs/recipe_rsb.py:procedure=A3': RSB_A3,
    'configs/recipe_resnet_rs.py': RESNET_RS_50,
    'configs/recipe_resnet_rs.py:depth=101,size=192': RESNET_RS_101_192,
    'configs/recipe_resnet_rs.py:depth=420,size=320': RESNET_RS_420_320,
}

# The published top-1 (%) each config's docstring must state: torchvision's
# ResNet50_Weights.IMAGENET1K_V1; Bag of Tricks Table 6 (mixup + distillation, mixup,
# distillation, neither); ResNet strikes back A1 / A2 / A3; tensorflow/tpu's resnet_rs
# README.
PUBLISHED_TOP1 = {
    'configs/recipe_torchvision_v1.py': ('76.13',),
    'configs/recipe_bag_of_tricks.py': ('79.29', '79.15', '78.67', '78.31'),
    'configs/recipe_rsb.py': ('80.4', '79.8', '78.1'),
    'configs/recipe_resnet_rs.py': ('78.8',),
}
# tensorflow/tpu models/official/resnet/resnet_rs/README.md (top-1) and configs/*.yaml
# (dropout_rate, drop_connect_rate, randaug_magnitude).
RESNET_RS_PUBLISHED = {
    (50, 160): (0.25, 0.0, 10, 78.8), (101, 160): (0.25, 0.0, 10, 80.3),
    (101, 192): (0.25, 0.0, 15, 81.2), (152, 192): (0.25, 0.0, 15, 82.0),
    (152, 224): (0.25, 0.0, 15, 82.2), (152, 256): (0.25, 0.0, 15, 83.0),
    (200, 256): (0.25, 0.1, 15, 83.4), (270, 256): (0.25, 0.1, 15, 83.8),
    (350, 256): (0.25, 0.1, 15, 84.0), (350, 320): (0.4, 0.1, 15, 84.2),
    (420, 320): (0.4, 0.1, 15, 84.4),
}


def _load(name: str):
  return configlib.load(os.path.join(ROOT, name))


def _get(config, dotted: str):
  value = config
  for part in dotted.split('.'):
    value = value[part]
  return value


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_recipe_holds_its_published_values(name):
  config = _load(name)
  wrong = {}
  for field, expected in RECIPES[name].items():
    actual = _get(config, field)
    if isinstance(expected, tuple):
      actual = tuple(actual)
    same = (actual == pytest.approx(expected, rel=1e-12)
            if isinstance(expected, float) and not isinstance(actual, bool) else
            actual == expected and type(actual) is type(expected))
    if not same:
      wrong[field] = (actual, expected)
  assert not wrong, f'{name}: (config, published) {wrong}'


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_recipe_resolves_on_one_cpu_device(name):
  config = _load(name)
  run = specs.resolve(config)
  recipe = pytest.importorskip('resnet_jax.recipe')
  recipe.resolve(config)
  assert run.data.batch_size == config.batch_size


def test_the_architectures_are_the_papers():
  bot = specs.resolve(_load('configs/recipe_bag_of_tricks.py')).model
  # ResNet-D: stride on the 3x3 (B), deep stem (C), avg-pool shortcut (D).
  assert (bot.stem, bot.stem_width, bot.shortcut, bot.bottleneck_stride) == (
      'deep', 64, 'D', 'v1.5')
  rs = specs.resolve(_load('configs/recipe_resnet_rs.py')).model
  assert (rs.stem, rs.stem_pool, rs.se_ratio, rs.shortcut, rs.stage_sizes) == (
      'deep', 'conv', 0.25, 'D', (3, 4, 6, 3))
  rsb = specs.resolve(_load('configs/recipe_rsb.py:procedure=A1')).model
  assert (rsb.stem, rsb.shortcut, rsb.se_ratio) == ('imagenet', 'B', 0.0)


@pytest.mark.parametrize('name, params', [
    # timm's resnet50d (= gluon-cv's resnet50_v1d), resnetrs50 and resnet50 (=
    # torchvision's): experiments/results/pretrained_parity.md, 1000 classes.
    ('configs/recipe_bag_of_tricks.py', 25_576_264),
    ('configs/recipe_resnet_rs.py', 35_691_912),
    ('configs/recipe_rsb.py:procedure=A1', 25_557_032),
    ('configs/recipe_torchvision_v1.py', 25_557_032),
])
def test_parameter_count_is_the_reference_models(name, params):
  config = _load(name)
  model = models.create_model(config.model, num_classes=1000)
  variables = summary.abstract_variables(model, (config.image_size, config.image_size, 3))
  assert summary.count_params(variables['params']) == params


@pytest.mark.parametrize('name', sorted(PUBLISHED_TOP1))
def test_docstring_states_the_published_result(name):
  doc = configlib.load_module(os.path.join(ROOT, name)).__doc__
  missing = [v for v in PUBLISHED_TOP1[name] if v not in doc]
  assert not missing, f'{name} docstring lacks the published top-1 {missing}'
  assert 'What differs here' in doc and 'python -m resnet_jax.main' in doc


def test_resnet_rs_table_is_the_released_one():
  module = configlib.load_module(os.path.join(ROOT, 'configs/recipe_resnet_rs.py'))
  assert module.PUBLISHED == RESNET_RS_PUBLISHED
  for (depth, size), (dropout, drop_path, magnitude, _) in RESNET_RS_PUBLISHED.items():
    config = _load(f'configs/recipe_resnet_rs.py:depth={depth},size={size}')
    assert (config.model.name, config.image_size) == (f'resnetrs{depth}', size)
    assert (config.model.dropout_rate, config.model.drop_path_rate) == (dropout, drop_path)
    assert config.rand_augment.startswith(f'rand-m{magnitude}-')
  # yaml train_steps 109,475 at batch 4096 over ImageNet's 1,281,167 images.
  assert round(350 * 1_281_167 / 4096) == 109_475


def test_torchvision_steps_down_at_epochs_30_and_60():
  run = specs.resolve(_load('configs/recipe_torchvision_v1.py'))
  lr = optim.create_learning_rate_schedule(run.optim, steps_per_epoch=10, total=900)
  assert [float(lr(s)) for s in (0, 299, 300, 599, 600, 899)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_resnet_rs_ema_ramp_is_tensorflows_two_updates_behind():
  spec = ema_lib.EmaSpec(decay=0.9999, use_warmup=True, warmup_gamma=9.0, warmup_power=1.0)
  # TF's ExponentialMovingAverage(num_updates=n): min(decay, (1 + n) / (10 + n)).
  tf_decay = lambda n: min(0.9999, (1 + n) / (10 + n))
  for n in (3, 10, 1000, 50_000, 100_000):
    assert float(ema_lib.ema_decay(n, spec)) == pytest.approx(tf_decay(n - 2), abs=1e-6)


@pytest.mark.parametrize('name, message', [
    ('configs/recipe_rsb.py:procedure=A4', 'valid procedures: A1, A2, A3'),
    ('configs/recipe_resnet_rs.py:depth=50,size=224', 'was not published'),
])
def test_an_unpublished_variant_is_refused(name, message):
  with pytest.raises(ConfigError, match=message):
    _load(name)
