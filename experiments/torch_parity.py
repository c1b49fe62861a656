r"""PyTorch parity: one CIFAR ResNet in resnet_jax and in PyTorch, same weights, same batches.

Copies a freshly initialised resnet_jax CIFAR ResNet (post-activation basic blocks,
shortcut A, B, C or none) into an independent PyTorch implementation written here,
checks that both give the same logits, loss and gradients on one training batch,
then trains both side by side with the config's SGD recipe (momentum, L2 weight
decay on conv and dense kernels as `resnet_jax.optim` applies it, the same lr
schedule) on the same augmented batches, and prints both losses per step.

It answers "is this the paper's network, or a bug?" without a GPU: the
first-batch check is exact to float32 rounding, and the side-by-side losses show
whether a training curve is the recipe's or the implementation's (both frameworks
follow the same path for the first steps, then drift apart as float rounding is
amplified by lr 0.1).

    pip install torch --index-url https://download.pytorch.org/whl/cpu   # once
    python experiments/torch_parity.py --config=configs/cifar10.py:depth=56,recipe=paper \
        --config.dataset=folder:../shared/data/cifar10-jpeg-q75.tar.gz --steps=30

Prints one line per step and a JSON summary; exits 1 if the first-batch check fails
(logits, loss or any gradient further apart than float32 rounding explains).
Results: experiments/README.md.
"""

import copy
import functools
import json

from absl import flags
from ml_collections import config_flags
import numpy as np

from resnet_jax import cli
from resnet_jax.errors import ConfigError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'A CIFAR config, e.g. configs/cifar10.py:depth=56,recipe=paper.',
    lock_config=True)
flags.DEFINE_integer('steps', 30, 'Training steps to run side by side (0: only the check).')
flags.DEFINE_enum('train_dtype', 'float32', ['float32', 'float64'],
                  'Precision of the side-by-side training (float64: the two should agree '
                  'to ~1e-10 for many steps, which also checks optimizer, schedule and '
                  'weight decay).')
flags.DEFINE_integer('init_seed', 0, 'PRNG seed of the resnet_jax initialisation.')
flags.mark_flags_as_required(['config'])

# First-batch tolerances. The check runs in float64: in float32, sums such as a
# BatchNorm scale's gradient cancel so much that the two libraries differ by up
# to ~1e-2 relative on a few tensors, which would hide a real mistake of that size.
LOGITS_ATOL = 1e-9  # Relative to max(1, max |logit|).
GRAD_RTOL = 1e-7  # ||g_jax - g_torch|| / ||g_torch||, per tensor.


def _check_supported(spec, config):
  problems = []
  if spec.family != 'cifar' or spec.block != 'basic' or spec.preact:
    problems.append('a CIFAR ResNet with post-activation basic blocks '
                    '(configs/cifar10.py, preact=false)')
  if spec.shortcut not in ('A', 'B', 'C', 'none') or spec.norm != 'batch':
    problems.append('shortcut A, B, C or none with batch norm')
  if config.optimizer not in ('sgd', 'nesterov') or (
      config.weight_decay and config.weight_decay_type != 'l2'):
    problems.append('the SGD recipe with L2 weight decay (recipe=paper)')
  if config.label_smoothing or config.dtype != 'float32':
    problems.append('float32 and no label smoothing')
  if problems:
    raise ConfigError('torch_parity covers ' + '; '.join(problems) +
                          f'; got {spec.family} {spec.block} preact={spec.preact} '
                          f'shortcut={spec.shortcut} norm={spec.norm} '
                          f'optimizer={config.optimizer} dtype={config.dtype}')


def torch_resnet(spec, num_classes):
  """The same network in PyTorch (NCHW), parameters named like resnet_jax's tree."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  def conv_bn(cin, cout, k, stride):
    return (nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5))

  class Block(nn.Module):

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1, self.norm1 = conv_bn(cin, cout, 3, stride)
      self.conv2, self.norm2 = conv_bn(cout, cout, 3, 1)
      self.stride, self.extra = stride, cout - cin
      projects = spec.shortcut == 'C' or (spec.shortcut == 'B' and (stride != 1 or cin != cout))
      self.sc_conv, self.sc_norm = conv_bn(cin, cout, 1, stride) if projects else (None, None)

    def forward(self, x):
      y = F.relu(self.norm1(self.conv1(x)))
      y = self.norm2(self.conv2(y))
      if spec.shortcut == 'none':
        return F.relu(y)
      if self.sc_conv is not None:
        s = self.sc_norm(self.sc_conv(x))
      else:
        s = x[:, :, ::self.stride, ::self.stride]
        s = F.pad(s, (0, 0, 0, 0, 0, self.extra)) if self.extra else s
      return F.relu(y + s)

  class Net(nn.Module):

    def __init__(self):
      super().__init__()
      self.conv1, self.norm1 = conv_bn(3, spec.stem_width, 3, 1)
      blocks, cin = {}, spec.stem_width
      for i, (n, width) in enumerate(zip(spec.stage_sizes, spec.stage_widths)):
        for j in range(n):
          stride = 2 if (i > 0 and j == 0) else 1
          blocks[f'stage{i + 1}.block{j + 1}'.replace('.', '__')] = Block(cin, width, stride)
          cin = width
      self.blocks = nn.ModuleDict(blocks)
      self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
      x = F.relu(self.norm1(self.conv1(x)))
      for block in self.blocks.values():
        x = block(x)
      return self.fc(x.mean((2, 3)))

  del torch
  return Net()


def jax_path(torch_name: str) -> tuple[str, ...]:
  """resnet_jax's parameter path for a torch parameter name of torch_resnet."""
  parts = torch_name.split('.')
  leaf = parts[-1]
  if parts[0] == 'fc':
    return ('head', 'fc', 'kernel' if leaf == 'weight' else 'bias')
  if parts[0] == 'blocks':
    stage, block = parts[1].split('__')
    prefix, module = (stage, block), parts[2]
  else:
    prefix, module = ('stem',), parts[0]
  if module.startswith('sc_'):
    prefix, module = prefix + ('shortcut',), module[3:]
  kind = 'kernel' if module.startswith('conv') else ('scale' if leaf == 'weight' else 'bias')
  return (*prefix, module, kind)


def to_torch_layout(a: np.ndarray) -> np.ndarray:
  if a.ndim == 4:  # HWIO -> OIHW.
    return a.transpose(3, 2, 0, 1)
  if a.ndim == 2:  # (in, out) -> (out, in).
    return a.T
  return a


def main(argv):
  del argv
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError('torch_parity needs PyTorch: pip install torch '
                      '--index-url https://download.pytorch.org/whl/cpu') from None
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_enable_x64', True)  # For the float64 check only.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  from resnet_jax import models  # pylint: disable=g-import-not-at-top
  from resnet_jax import parallel  # pylint: disable=g-import-not-at-top
  from resnet_jax import specs  # pylint: disable=g-import-not-at-top
  from resnet_jax import train  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import placement  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  spec = models.resolve_spec(config.model)
  _check_supported(spec, config)
  exp = train.setup_experiment(specs.resolve(config))
  model = models.create_model(spec, num_classes=exp.num_classes,
                              dtype=jnp.float32, axis_name=None)
  variables = model.init({'params': jax.random.PRNGKey(FLAGS.init_seed)},
                         jnp.zeros((1, *exp.meta.image_shape), jnp.float32), train=False)
  params, batch_stats = variables['params'], variables['batch_stats']

  def by_path(tree) -> dict[tuple[str, ...], np.ndarray]:
    return {tuple(k.key for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}

  net = torch_resnet(spec, exp.num_classes).train()
  params_by_path = by_path(params)
  torch_names = dict(net.named_parameters())
  if len(torch_names) != len(params_by_path):
    raise AssertionError(f'{len(torch_names)} torch tensors vs {len(params_by_path)} flax ones')
  with torch.no_grad():
    for name, p in torch_names.items():
      p.copy_(torch.from_numpy(np.array(to_torch_layout(params_by_path[jax_path(name)]))))

  def loss_fn(p, bs, x, y, model=model):
    logits, updates = model.apply({'params': p, 'batch_stats': bs}, x, train=True,
                                  mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (logits, updates['batch_stats'])

  train64 = FLAGS.train_dtype == 'float64'
  train_model = model.clone(dtype=jnp.float64) if train64 else model
  grad_fn = jax.value_and_grad(functools.partial(loss_fn, model=train_model), has_aux=True)

  @jax.jit
  def jax_step(p, bs, opt_state, x, y):
    (loss, (_, bs)), g = grad_fn(p, bs, x, y)
    updates, opt_state = exp.tx.update(g, opt_state, p)
    return optax.apply_updates(p, updates), bs, opt_state, loss

  batches = exp.inputs.train_batches(parallel.make_mesh())
  rng = jax.random.PRNGKey(config.seed)

  def next_batch(step):
    b = next(batches)
    images = np.asarray(b['image']).reshape(-1, *exp.meta.image_shape)
    x = placement.preprocess(
        jnp.asarray(images), mean=exp.meta.mean, std=exp.meta.std,
        augment_key=jax.random.fold_in(rng, step) if exp.inputs.augment_in_step else None)
    return np.asarray(x, np.float32), np.asarray(b['label']).reshape(-1)

  def torch_batch(x, y):
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()

  # 1. One batch, same weights, float64: logits, loss, every gradient.
  x, y = next_batch(0)
  f64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
  (loss_j, (logits_j, _)), grads_j = jax.value_and_grad(
      functools.partial(loss_fn, model=model.clone(dtype=jnp.float64)), has_aux=True)(
          f64(params), f64(batch_stats), x.astype(np.float64), y)
  net64 = copy.deepcopy(net).double()
  xt, yt = torch_batch(x, y)
  logits_t = net64(xt.double())
  loss_t = F.cross_entropy(logits_t, yt)
  loss_t.backward()
  torch_names64 = dict(net64.named_parameters())
  grads_by_path = by_path(grads_j)
  grad_err, worst = 0.0, ''
  for name, p in torch_names64.items():
    gj = to_torch_layout(grads_by_path[jax_path(name)])
    gt = p.grad.numpy()
    err = float(np.linalg.norm(gj - gt) / max(np.linalg.norm(gt), 1e-30))
    if err > grad_err:
      grad_err, worst = err, name
  logits_err = float(np.abs(np.asarray(logits_j) - logits_t.detach().numpy()).max())
  check = {'logits_max_abs_diff': logits_err, 'first_loss_jax': float(loss_j),
           'first_loss_torch': float(loss_t.detach()), 'worst_grad_rel_diff': grad_err,
           'worst_grad_tensor': worst, 'num_tensors': len(torch_names)}
  ok = (logits_err <= LOGITS_ATOL * max(1.0, float(np.abs(logits_j).max()))
        and grad_err <= GRAD_RTOL)
  print(f'first batch, float64: logits max |diff| {logits_err:.2e}, loss {float(loss_j):.6f} (jax) '
        f'vs {float(loss_t.detach()):.6f} (torch), worst gradient rel. diff {grad_err:.2e} ({worst}) '
        f'over {len(torch_names)} tensors: {"OK" if ok else "MISMATCH"}', flush=True)

  # 2. Train both from the same weights on the same batches.
  if train64:
    params, batch_stats = f64(params), f64(batch_stats)
    net = net64
    net.zero_grad()
    torch_names = torch_names64
  opt = torch.optim.SGD([
      {'params': [p for n, p in torch_names.items() if jax_path(n)[-1] == 'kernel'],
       'weight_decay': config.weight_decay},
      {'params': [p for n, p in torch_names.items() if jax_path(n)[-1] != 'kernel'],
       'weight_decay': 0.0}],
      lr=float(exp.learning_rate_fn(0)), momentum=config.momentum,
      nesterov=config.optimizer == 'nesterov')
  opt_state = exp.tx.init(params)
  rows = []
  for step in range(FLAGS.steps):
    if step:
      x, y = next_batch(step)
      xt, yt = torch_batch(x, y)
    if train64:
      x, xt = x.astype(np.float64), xt.double()
    lr = float(exp.learning_rate_fn(step))
    for group in opt.param_groups:
      group['lr'] = lr
    params, batch_stats, opt_state, lj = jax_step(params, batch_stats, opt_state, x, y)
    opt.zero_grad()
    lt = F.cross_entropy(net(xt), yt)
    lt.backward()
    opt.step()
    rows.append((step, lr, float(lj), lt.item()))
    print(f'step {step:4d}  lr {lr:.4f}  loss jax {float(lj):10.6f}  torch {lt.item():10.6f}',
          flush=True)
  print(json.dumps({**check, 'ok': ok, 'model': spec.describe(), 'steps': FLAGS.steps,
                    'train_dtype': FLAGS.train_dtype,
                    'loss_jax': [round(r[2], 6) for r in rows],
                    'loss_torch': [round(r[3], 6) for r in rows],
                    'torch_version': torch.__version__, 'jax_version': jax.__version__}))
  return 0 if ok else 1


if __name__ == '__main__':
  cli.run(main)
