"""Tests for resnet_jax.weights: torchvision / timm / CIFAR state dicts <-> our variables.

No PyTorch: the key tables and PyTorch's logits were recorded by
experiments/pretrained_parity.py --part=fixtures into tests/fixtures/weights/,
and the weights are regenerated here from their seed.
"""

import importlib.util
import json
import logging
import lzma
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from resnet_jax import checkpoint
from resnet_jax import configlib
from resnet_jax import models
from resnet_jax import weights
from resnet_jax.errors import ConfigError
from resnet_jax.weights import files
from resnet_jax.weights import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'weights')
TOLERANCE = 1e-5  # As the experiment: max |ours - torch| / max |torch|.


def _load_tables():
  with lzma.open(os.path.join(FIXTURES, 'key_tables.json.xz'), 'rt', encoding='utf-8') as f:
    data = json.load(f)
  return {name: (entry['num_classes'], [(k, tuple(s)) for k, s in data['tables'][entry['table']]])
          for name, entry in data['archs'].items()}


TABLES = _load_tables()
with open(os.path.join(FIXTURES, 'logits.json'), encoding='utf-8') as _f:
  LOGITS = json.load(_f)


def _parse(name: str) -> tuple[str, str, str | None]:
  """'torch_cifar/cifar_resnet20[B]' -> ('torch_cifar', 'cifar_resnet20', 'B')."""
  source, arch = name.split('/')
  shortcut = None
  if arch.endswith(']'):
    arch, shortcut = arch[:-1].split('[')
  return source, arch, shortcut


# --- Key tables -------------------------------------------------------------------


def test_every_architecture_has_a_recorded_pytorch_table():
  listed = {f'{s}/{a}' for s in ('torchvision', 'timm') for a in weights.ARCHS[s]}
  recorded = {n for n in TABLES if not n.startswith('torch_cifar/')}
  assert listed == recorded
  assert len(weights.ARCHS['torchvision']) == 10 and len(weights.ARCHS['timm']) == 44


@pytest.mark.parametrize('name', sorted(TABLES))
def test_key_table_equals_pytorchs(name):
  """Names, shapes and order of the PyTorch model's state_dict(), from our model alone."""
  source, arch, shortcut = _parse(name)
  num_classes, expected = TABLES[name]
  ours = weights.key_table(arch, source, num_classes=num_classes, shortcut=shortcut)
  assert list(ours.items()) == expected


def test_returned_models_are_the_registry_variants():
  cases = {('torchvision', 'resnet50'): ('resnet50', 'imagenet', 'B', 1, 64),
           ('timm', 'resnet50d'): ('resnet50', 'deep', 'D', 1, 64),
           ('timm', 'resnet101c'): ('resnet101', 'deep', 'B', 1, 64),
           ('timm', 'resnext101_32x16d'): ('', 'imagenet', 'B', 32, 16),
           ('torchvision', 'wide_resnet101_2'): ('wide_resnet101_2', 'imagenet', 'B', 1, 64)}
  for (source, arch), (name, stem, shortcut, groups, per_group) in cases.items():
    spec = models.resolve_spec(weights.model_config(arch, source))
    assert (spec.name, spec.stem, spec.shortcut, spec.groups, spec.width_per_group,
            spec.bottleneck_stride) == (name, stem, shortcut, groups, per_group, 'v1.5')
  deep = models.resolve_spec(weights.model_config('resnet18d', 'timm'))
  assert deep.stem_width == 64  # timm stem_width=32: convs of 32, 32, then 64.
  # SE (timm attn_layer='se', rd_ratio 1/16; ResNet-RS 0.25) and ResNet-RS's conv stem pool.
  cases = {'seresnet50': ('seresnet50', 'imagenet', 'max', 'B', 1 / 16),
           'seresnext101d_32x8d': ('seresnext101_32x8d', 'deep', 'max', 'D', 1 / 16),
           'seresnet200d': ('', 'deep', 'max', 'D', 1 / 16),
           'resnetrs50': ('resnetrs50', 'deep', 'conv', 'D', 0.25),
           'resnetrs420': ('resnetrs420', 'deep', 'conv', 'D', 0.25)}
  for arch, expected in cases.items():
    spec = models.resolve_spec(weights.model_config(arch, 'timm'))
    assert (spec.name, spec.stem, spec.stem_pool, spec.shortcut, spec.se_ratio) == expected


# --- Logits against PyTorch's -------------------------------------------------------


@pytest.mark.parametrize('name', sorted(LOGITS['archs']))
def test_logits_equal_pytorchs(name, fast_compile):
  source, arch, shortcut = _parse(name)
  recorded = LOGITS['archs'][name]
  table = weights.key_table(arch, source, num_classes=LOGITS['num_classes'],
                            shortcut=shortcut)
  state_dict = weights.random_state_dict(table, LOGITS['seed'])
  model, variables = weights.from_state_dict(state_dict, arch, source)
  images = synthetic.random_images(LOGITS['batch'], recorded['size'], LOGITS['seed'])
  ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
  theirs = np.asarray(recorded['logits'], np.float32)
  assert np.abs(ours - theirs).max() <= TOLERANCE * np.abs(theirs).max()


# --- Round trips and strictness ---------------------------------------------------


@pytest.mark.parametrize('source,arch', [('timm', 'resnet50d'), ('torchvision', 'resnet18'),
                                         ('torch_cifar', 'cifar_resnet20'),
                                         ('timm', 'resnetrs50')])
def test_round_trip_is_bitwise(source, arch):
  table = weights.key_table(arch, source, num_classes=7,
                            shortcut='C' if source == 'torch_cifar' else None)
  state_dict = weights.random_state_dict(table, 3)
  model, variables = weights.from_state_dict(state_dict, arch, source)
  assert model.num_classes == 7
  back = weights.to_state_dict(variables, arch, source)
  assert list(back) == list(state_dict)
  for k, v in state_dict.items():
    assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
  _, again = weights.from_state_dict(back, arch, source)
  flat, flat_again = (checkpoint.flatten(t) for t in (variables, again))
  assert flat.keys() == flat_again.keys()
  assert all(np.array_equal(flat[k], flat_again[k]) for k in flat)


def test_se_and_stem_pool_tensors_land_where_timm_has_them():
  table = weights.key_table('resnetrs50', 'timm', num_classes=10)
  state_dict = weights.random_state_dict(table, 0)
  _, variables = weights.from_state_dict(state_dict, 'resnetrs50', 'timm')
  params, stats = variables['params'], variables['batch_stats']
  se = params['stage3']['block2']['se']
  np.testing.assert_array_equal(se['fc1']['kernel'],
                                state_dict['layer3.1.se.fc1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(se['fc2']['bias'], state_dict['layer3.1.se.fc2.bias'])
  np.testing.assert_array_equal(params['stem']['pool_conv']['kernel'],
                                state_dict['maxpool.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(stats['stem']['pool_norm']['var'],
                                state_dict['maxpool.1.running_var'])


def test_batchnorm_statistics_land_in_batch_stats():
  table = weights.key_table('resnet18', 'torchvision', num_classes=10)
  state_dict = weights.random_state_dict(table, 0)
  _, variables = weights.from_state_dict(state_dict, 'resnet18', 'torchvision')
  stats = variables['batch_stats']
  np.testing.assert_array_equal(stats['stem']['norm1']['mean'], state_dict['bn1.running_mean'])
  np.testing.assert_array_equal(stats['stage2']['block1']['shortcut']['norm']['var'],
                                state_dict['layer2.0.downsample.1.running_var'])
  np.testing.assert_array_equal(variables['params']['stage1']['block1']['conv1']['kernel'],
                                state_dict['layer1.0.conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['params']['head']['fc']['kernel'],
                                state_dict['fc.weight'].T)


def test_num_batches_tracked_is_optional():
  table = weights.key_table('resnet18d', 'timm', num_classes=10)
  state_dict = {k: v for k, v in weights.random_state_dict(table, 0).items()
                if not k.endswith('num_batches_tracked')}
  weights.from_state_dict(state_dict, 'resnet18d', 'timm')


def _resnet18(**changes):
  state_dict = weights.random_state_dict(
      weights.key_table('resnet18', 'torchvision', num_classes=10), 0)
  for key, value in changes.items():
    if value is None:
      del state_dict[key]
    else:
      state_dict[key] = value
  return state_dict


def test_missing_unexpected_and_misshapen_tensors_are_named():
  state_dict = _resnet18(**{'layer1.0.bn1.running_var': None,
                            'layer9.0.conv1.weight': np.zeros((1,), np.float32),
                            'layer2.0.conv1.weight': np.zeros((128, 64, 1, 1), np.float32)})
  with pytest.raises(ConfigError) as e:
    weights.from_state_dict(state_dict, 'resnet18', 'torchvision')
  message = str(e.value)
  assert 'missing: layer1.0.bn1.running_var' in message
  assert 'unexpected: layer9.0.conv1.weight' in message
  assert 'wrong shape: layer2.0.conv1.weight: file (128,64,1,1) vs model (128,64,3,3)' in message
  assert '\n' not in message


def test_long_lists_are_bounded_and_the_wrong_architecture_says_so():
  state_dict = _resnet18()
  with pytest.raises(ConfigError, match=r'missing: .* \(\d+ in all\)') as e:
    weights.from_state_dict(state_dict, 'resnet18d', 'timm')
  assert str(e.value).count('conv1.') < 40
  with pytest.raises(ConfigError, match='None of the keys match'):
    weights.from_state_dict(
        {'fc.weight': state_dict['fc.weight'], 'x': state_dict['fc.bias']}, 'resnet18',
        'torchvision')


def test_dataparallel_prefix_gets_a_hint():
  state_dict = {f'module.{k}': v for k, v in _resnet18().items()}
  state_dict['fc.weight'] = state_dict['module.fc.weight']
  with pytest.raises(ConfigError, match="start with 'module.'"):
    weights.from_state_dict(state_dict, 'resnet18', 'torchvision')


def test_unknown_names_list_the_valid_ones():
  with pytest.raises(ConfigError, match="arch='resnet50s' is not a timm architecture.*resnet50d"):
    weights.model_config('resnet50s', 'timm')
  with pytest.raises(ConfigError, match="source='keras' is not supported; valid: torchvision"):
    weights.model_config('resnet50', 'keras')
  with pytest.raises(ConfigError, match='depth=21'):
    weights.model_config('cifar_resnet21', 'torch_cifar')
  with pytest.raises(ConfigError, match='torch_cifar only'):
    weights.model_config('resnet50', 'timm', shortcut='B')


def test_cifar_shortcut_is_read_from_the_keys():
  for shortcut in ('A', 'B', 'C'):
    table = weights.key_table('cifar_resnet20', 'torch_cifar', num_classes=10,
                              shortcut=shortcut)
    model, _ = weights.from_state_dict(weights.random_state_dict(table), 'cifar_resnet20',
                                       'torch_cifar')
    assert model.spec.shortcut == shortcut
  model, _ = weights.from_state_dict(weights.random_state_dict(table), 'cifar_resnet20',
                                     'torch_cifar', shortcut='C')
  assert model.spec.shortcut == 'C'


def test_export_refuses_variables_of_another_model():
  table = weights.key_table('resnet18', 'torchvision', num_classes=10)
  _, variables = weights.from_state_dict(weights.random_state_dict(table), 'resnet18',
                                         'torchvision')
  with pytest.raises(ConfigError, match='missing: params/stage1/block3'):
    weights.to_state_dict(variables, 'resnet34', 'torchvision')
  with pytest.raises(ConfigError, match='missing: params/stem/conv2/kernel.*wrong shape: '
                     r'params/stem/conv1/kernel: given \(7,7,3,64\) vs resnet18d \(3,3,3,32\)'):
    weights.to_state_dict(variables, 'resnet18d', 'timm')


def test_find_arch_from_a_run_config():
  r50 = configlib.load(os.path.join(REPO, 'configs', 'r50.py')).model
  assert weights.find_arch(r50, 'torchvision') == 'resnet50'
  assert weights.find_arch({**r50.to_dict(), 'stem': 'deep', 'shortcut': 'D'},
                           'timm') == 'resnet50d'
  assert weights.find_arch({'family': 'cifar', 'depth': 56, 'shortcut': 'B'},
                           'torch_cifar') == 'cifar_resnet56'
  with pytest.raises(ConfigError, match='bottleneck_stride|stride v1|is not one that'):
    weights.find_arch({**r50.to_dict(), 'bottleneck_stride': 'v1'}, 'torchvision')
  # SE and the conv stem pool are part of what the weights compute.
  assert weights.find_arch({**r50.to_dict(), 'se_ratio': 1 / 16}, 'timm') == 'seresnet50'
  assert weights.find_arch({'name': 'resnetrs101', 'shortcut': 'D', 'drop_path_rate': 0.2,
                            'dropout_rate': 0.25}, 'timm') == 'resnetrs101'
  with pytest.raises(ConfigError, match='SE 0.0625.*is not one that torchvision has'):
    weights.find_arch({**r50.to_dict(), 'se_ratio': 1 / 16}, 'torchvision')
  with pytest.raises(ConfigError, match='is not one that timm has'):
    weights.find_arch({'name': 'resnetrs50', 'shortcut': 'D', 'stem_pool': 'max'}, 'timm')
  with pytest.raises(ConfigError, match='is not one that torch_cifar has'):
    weights.find_arch({'depth': 20, 'se_ratio': 0.25}, 'torch_cifar')


# --- Files and the command line --------------------------------------------------


def _safetensors(path, state_dict):
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  st_numpy.save_file(state_dict, str(path))
  return str(path)


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  """(state dict, DIR) of a torchvision resnet18 (1000 classes) imported by the CLI."""
  tmp = tmp_path_factory.mktemp('weights')
  state_dict = weights.random_state_dict(weights.key_table('resnet18', 'torchvision'), 5)
  source = _safetensors(tmp / 'resnet18.safetensors', state_dict)
  directory = str(tmp / 'tv_resnet18')
  status, stderr = run_cli('import', '--source=torchvision', '--arch=resnet18',
                           f'--input={source}', f'--output={directory}')
  assert status == 0, stderr[-3000:]
  return state_dict, directory


def run_cli(*args):
  """`python -m resnet_jax.weights ARGS`: (exit status, stderr)."""
  proc = subprocess.run([sys.executable, '-m', 'resnet_jax.weights', *args], cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
                        text=True, timeout=300)
  return proc.returncode, proc.stderr


def test_import_writes_a_workdir_evaluate_can_read(imported):
  state_dict, directory = imported
  assert os.path.isdir(os.path.join(directory, 'checkpoints', '0'))
  with open(os.path.join(directory, 'config.json'), encoding='utf-8') as f:
    config = json.load(f)
  assert (config['dataset'], config['augment'], config['image_size'], config['num_classes'],
          config['dtype'], config['eval_resize']) == (
              'imagenet2012', 'imagenet', 224, 1000, 'float32', 256)
  assert (config['model']['name'], config['model']['depth'], config['model']['shortcut'],
          config['model']['family']) == ('resnet18', 18, 'B', 'imagenet')
  with open(os.path.join(directory, 'weights.json'), encoding='utf-8') as f:
    provenance = json.load(f)
  assert provenance['arch'] == 'resnet18' and len(provenance['sha256']) == 64
  saved, record = checkpoint.read_state(directory)
  assert record['step'] == 0 and set(saved) == {'step', 'params', 'batch_stats'}
  _, variables = weights.from_state_dict(state_dict, 'resnet18', 'torchvision')
  flat_saved, flat_ours = checkpoint.flatten(saved), checkpoint.flatten(variables)
  assert all(np.array_equal(flat_saved[k], v) for k, v in flat_ours.items())
  # The stored config describes the model: this is what evaluate builds without --config.
  stored = configlib.load_stored(directory)
  assert weights.find_arch(stored.model, 'torchvision') == 'resnet18'


def test_export_gives_back_the_imported_file(imported, tmp_path):
  state_dict, directory = imported
  out = str(tmp_path / 'back.safetensors')
  status, stderr = run_cli('export', f'--checkpoint={directory}', '--source=torchvision',
                           f'--output={out}')
  assert status == 0, stderr[-3000:]
  back = files.load_state_dict(out)
  assert set(back) == set(state_dict)
  assert all(np.array_equal(back[k], v) for k, v in state_dict.items())


def test_export_refuses_an_architecture_the_run_is_not(imported, tmp_path):
  _, directory = imported
  status, stderr = run_cli('export', f'--checkpoint={directory}', '--source=timm',
                           '--arch=resnet18d', f'--output={tmp_path / "x.safetensors"}')
  assert status == 2
  assert 'is not a timm resnet18d' in stderr


def test_import_into_a_used_directory_is_refused(imported, tmp_path):
  state_dict, directory = imported
  source = _safetensors(tmp_path / 'w.safetensors', state_dict)
  status, stderr = run_cli('import', '--source=torchvision', '--arch=resnet18',
                           f'--input={source}', f'--output={directory}')
  assert status == 2 and 'exists and is not empty' in stderr


def test_pth_without_torch_says_how_to_convert(tmp_path):
  path = tmp_path / 'resnet50-11ad3fa6.pth'
  path.write_bytes(b'not really a pickle')
  if importlib.util.find_spec('torch') is not None:
    pytest.skip('torch is installed here')
  with pytest.raises(ConfigError) as e:
    files.load_state_dict(str(path))
  message = str(e.value)
  assert 'needs torch' in message and 'safetensors.torch import save_file' in message
  assert 'resnet50-11ad3fa6.safetensors' in message and '\n' not in message


def test_cli_bad_input_is_one_line_and_status_2(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.weights', 'import', '--source=timm',
       '--arch=resnet26', f'--input={tmp_path / "missing.safetensors"}',
       f'--output={tmp_path / "out"}'],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f'error: weights file {tmp_path / "missing.safetensors"} does not exist']


# --- Fine-tuning and evaluation from an imported checkpoint ------------------------

# The imported model's own config (configs/stored.py:DIR), its ImageNet data
# swapped for a few synthetic 32x32 images of 10 classes.
TINY = {'dataset': 'fake', 'augment': 'none', 'image_size': 32, 'num_classes': 10,
        'batch_size': 4, 'eval_batch_size': 4, 'num_eval_batches': 1,
        'num_train_steps': 2, 'log_every_steps': 1, 'eval_every_steps': 2,
        'checkpoint_every_steps': 2, 'optimizer': 'adam', 'learning_rate': 1e-3}


def _stored_config(directory, **overrides):
  return configlib.load(os.path.join(REPO, 'configs', f'stored.py:{directory}'), overrides)


def test_init_from_keeps_the_statistics_and_drops_the_head(imported):
  """What a 10-class run starts from: the imported tensors, except the classifier."""
  state_dict, directory = imported
  _, variables = weights.from_state_dict(state_dict, 'resnet18', 'torchvision')
  fresh = jax.tree.map(np.zeros_like, variables)
  fresh['params']['head']['fc'] = {'kernel': np.full((512, 10), 7, np.float32),
                                   'bias': np.zeros((10,), np.float32)}
  params, batch_stats = checkpoint.init_from(
      directory, types.SimpleNamespace(**fresh), skip_head=True)
  start = checkpoint.flatten({'params': params, 'batch_stats': batch_stats})
  imported_flat = checkpoint.flatten(variables)
  assert set(start) == set(imported_flat)
  for key, value in imported_flat.items():
    if key.startswith('params/head/'):
      assert start[key].shape != value.shape
    else:
      np.testing.assert_array_equal(start[key], value, err_msg=key)
  assert (start['params/head/fc/kernel'] == 7).all()  # The run's own initialisation.


@pytest.mark.usefixtures('compile_cache')
def test_fine_tuning_from_imported_weights_trains(imported, tmp_path, caplog):
  """`main --config=configs/stored.py:DIR --config.init_from=DIR --config.num_classes=10`."""
  from resnet_jax import train  # pylint: disable=g-import-not-at-top
  state_dict, directory = imported
  _, variables = weights.from_state_dict(state_dict, 'resnet18', 'torchvision')
  imported_flat = checkpoint.flatten(variables)
  workdir = str(tmp_path / 'finetune')
  with caplog.at_level(logging.INFO):
    result = train.train_and_evaluate(
        _stored_config(directory, **TINY, init_from=directory), workdir)
  assert result['step'] == 2 and np.isfinite(result['train_loss'])
  assert np.isfinite(result['eval_loss'])
  assert 'classifier left out' in caplog.text
  tuned = checkpoint.flatten(checkpoint.read_state(workdir)[0])
  assert tuned['params/head/fc/kernel'].shape == (512, 10)
  # Two Adam steps (lr 1e-3) from the imported weights move each by a few lr at
  # most; a fresh initialisation would be ~0.1 away. (The BatchNorm statistics
  # move by 19 % of the way to the batch's in two steps of momentum 0.9; that
  # they start as imported is test_init_from_keeps_the_statistics_and_drops_the_head.)
  for key in ('params/stem/conv1/kernel', 'params/stage3/block2/conv2/kernel',
              'params/stage4/block1/norm2/scale'):
    moved = np.abs(tuned[key] - imported_flat[key]).max()
    assert 0 < moved < 1e-2, key


def test_evaluate_reads_the_stored_config(imported, tmp_path, child_env):
  """`evaluate --checkpoint=DIR` builds everything from DIR/config.json (no --config)."""
  _, directory = imported
  # The record names imagenet2012, which is not here: with an empty data dir
  # evaluate gets as far as looking for it, and says so in one line.
  proc = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.evaluate', f'--checkpoint={directory}'],
      env=child_env(TFDS_DATA_DIR=str(tmp_path / 'no_data')), cwd=REPO,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'imagenet2012' in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]


@pytest.mark.usefixtures('compile_cache')
def test_evaluate_runs_on_the_imported_checkpoint(imported):
  """The stored config (configs/stored.py:DIR) with synthetic data swapped in."""
  from resnet_jax import evaluate  # pylint: disable=g-import-not-at-top
  _, directory = imported
  config = _stored_config(directory, dataset='fake', image_size=32, batch_size=4,
                          augment='none')
  report = evaluate.evaluate_checkpoint(config, directory, num_batches=1)
  assert report['step'] == 0 and report['eval_count'] == 4
  assert np.isfinite(report['eval_loss'])
