r"""Import torchvision / timm weights as a resnet_jax checkpoint, and export them back.

    python -m resnet_jax.weights import --source=torchvision --arch=resnet50 \
        --input=resnet50.safetensors --output=runs/tv_resnet50
    python -m resnet_jax.evaluate --checkpoint=runs/tv_resnet50
    python -m resnet_jax.main --config=configs/r50.py --workdir=runs/ft \
        --config.init_from=runs/tv_resnet50 --config.num_classes=10
    python -m resnet_jax.weights export --checkpoint=runs/ft --source=torchvision \
        --output=ft.safetensors

import: FILE is a PyTorch state dict, `.safetensors` (no PyTorch needed) or
`.pth`/`.pt` (needs torch). Every tensor must match the architecture (names and
shapes; `num_batches_tracked` is ignored); DIR becomes a workdir holding the
weights as checkpoint step 0, `config.json` (model, classes, float32,
ImageNet at 224 with torchvision's eval transform: shorter side --eval_resize,
default 256, then the centre 224), `dataset.json` (the training data's facts:
for a 1,000-class ImageNet head its class names, which `predict` prints;
CIFAR-10's names for a 10-class torch_cifar head) and `weights.json` (source,
arch, file, SHA-256).

export: writes what `model.load_state_dict(safetensors.torch.load_file(FILE),
strict=True)` accepts in torchvision / timm (or experiments/torch_parity.py's
CIFAR layout). --arch defaults to the architecture of the run's config.json.
An existing FILE is refused unless --overwrite is given.

Exit status 2 with a one-line reason on bad input (unknown arch, a tensor that
does not fit, a file PyTorch is needed for).
"""

import os
import sys

from absl import flags

from resnet_jax import cli
from resnet_jax import models
from resnet_jax.errors import ConfigError
from resnet_jax.weights import files
from resnet_jax.weights import mapping

FLAGS = flags.FLAGS
COMMANDS = ('import', 'export')
# The flags of one command only; --source, --arch and --output are both's.
COMMAND_FLAGS = {'import': ('input', 'shortcut', 'eval_resize'),
                 'export': ('checkpoint', 'overwrite')}
USAGE = ('usage: python -m resnet_jax.weights import --source=S --arch=A --input=FILE '
         '--output=DIR | export --checkpoint=DIR --source=S --output=FILE.safetensors')


def define_flags() -> None:
  """The weights command's flags (see cli.run)."""
  archs = '; '.join(f'{s}: {", ".join(mapping.arch_names(s))}' for s in mapping.SOURCES)
  flags.DEFINE_enum('source', None, mapping.SOURCES, 'Naming of the state dict.')
  flags.DEFINE_string('arch', None, f'The PyTorch model name ({archs}); export: '
                      "default from the run's config.json.")
  flags.DEFINE_string('output', None, 'import: a new workdir (checkpoints/0, '
                      'config.json); export: FILE.safetensors.')
  flags.DEFINE_string('input', None, 'import: .safetensors, or .pth/.pt (needs torch).')
  flags.DEFINE_enum('shortcut', None, mapping.CIFAR_SHORTCUTS,
                    'import, torch_cifar only (default: read from the keys; A for none).')
  flags.DEFINE_integer('eval_resize', 256,
                       'import: config.eval_resize written to config.json, the shorter '
                       'side before the centre 224 crop (torchvision: 256 for its V1 '
                       'weights, 232 for V2 and resnext101_64x4d).')
  flags.DEFINE_string('checkpoint', None,
                      'export: a workdir, its checkpoints/ directory or a step directory.')
  flags.DEFINE_boolean('overwrite', False, 'export: replace --output if it exists.')
  flags.mark_flags_as_required(['source', 'output'])


def _cmd_import(args) -> int:
  if not args.input or not args.arch:
    raise ConfigError(f'import needs --arch and --input; {USAGE}')
  state_dict = files.load_state_dict(args.input)
  model, variables = mapping.from_state_dict(state_dict, args.arch, args.source,
                                             shortcut=args.shortcut)
  spec = model.spec
  ignored = sorted(k for k in state_dict if k.endswith('.' + mapping.NUM_BATCHES_TRACKED))
  config = files.eval_config(args.arch, args.source, model.num_classes,
                             shortcut=spec.shortcut if args.source == 'torch_cifar' else None,
                             eval_resize=args.eval_resize)
  provenance = {
      'source': args.source, 'arch': args.arch, 'input': os.path.abspath(args.input),
      'sha256': files.sha256(args.input), 'num_tensors': len(state_dict) - len(ignored),
      'ignored': f'{len(ignored)} num_batches_tracked', 'num_classes': model.num_classes,
      'model': spec.describe(),
  }
  meta = files.dataset_meta(config)
  step_dir = files.write_workdir(args.output, config, variables, provenance, meta)
  names = (f'{len(meta.class_names)} class names of {meta.name}' if meta.class_names
           else 'no class names')
  print(f'{args.source} {args.arch}: {len(state_dict) - len(ignored)} tensors '
        f'({len(ignored)} num_batches_tracked ignored) -> {step_dir}\n'
        f'  model: {spec.describe()}, {model.num_classes} classes ({names})\n'
        f'  evaluate:  python -m resnet_jax.evaluate --checkpoint={args.output}\n'
        f'  predict:   python -m resnet_jax.predict --checkpoint={args.output} IMAGE...\n'
        f'  fine-tune: --config.init_from={args.output}', flush=True)
  return 0


def _cmd_export(args) -> int:
  if not args.checkpoint:
    raise ConfigError(f'export needs --checkpoint; {USAGE}')
  if os.path.exists(args.output) and not args.overwrite:
    raise ConfigError(f'{args.output} exists: pass --overwrite to replace it, or choose '
                      'another --output')
  from resnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  workdir, model_config = files.read_model_config(args.checkpoint)
  where = workdir or args.checkpoint
  arch = args.arch
  if arch is None:
    if model_config is None:
      raise ConfigError(f'no config.json beside {args.checkpoint} to read the architecture '
                        f'from: pass --arch (one of {", ".join(mapping.arch_names(args.source))})')
    arch = mapping.find_arch(model_config, args.source)
  elif model_config is not None and not mapping.same_architecture(
      model_config, arch, args.source):
    raise ConfigError(
        f'the run in {workdir} is not a {args.source} {arch} (its config.json: '
        f'{models.resolve_spec(model_config).describe()}); '
        f'leave out --arch to use the matching architecture')
  state, record = checkpoint.read_state(args.checkpoint)
  state_dict = mapping.to_state_dict(state, arch, args.source)
  files.save_state_dict(state_dict, args.output, metadata={
      'source': args.source, 'arch': arch, 'resnet_jax_step': str(record.get('step'))})
  tensors = sum(not k.endswith(mapping.NUM_BATCHES_TRACKED) for k in state_dict)
  print(f'{args.source} {arch}: step {record.get("step")} of {where} -> {args.output} '
        f'({tensors} tensors + {len(state_dict) - tensors} num_batches_tracked)', flush=True)
  if model_config is None:
    print(f'warning: no config.json beside {where}: the architecture was checked by '
          'tensor names and shapes only', file=sys.stderr)
  return 0


_RUN = {'import': _cmd_import, 'export': _cmd_export}


def main(argv: list[str]) -> int:
  """absl main: argv is [program, COMMAND]; returns the exit status."""
  args = argv[1:]
  if len(args) != 1 or args[0] not in COMMANDS:
    raise ConfigError(f'expected one command, import or export, got {args or "none"}; '
                      f'{USAGE}')
  command = args[0]
  for other, names in COMMAND_FLAGS.items():
    given = [n for n in names if other != command and FLAGS[n].present]
    if given:
      raise ConfigError(f'--{given[0]} applies to {other!r}, not {command!r}; {USAGE}')
  return _RUN[command](FLAGS)


if __name__ == '__main__':
  cli.run(main, define_flags)
