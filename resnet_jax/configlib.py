"""Loading ml_collections config files outside absl flags, and config-file helpers.

Config files under `configs/` are plain Python loaded by path (as `config_flags`
does), so they cannot rely on `configs` being importable. They load their base
with `configlib.sibling(__file__, 'base')` instead, which works from any cwd.
"""

import ast
import importlib.util
import os
import sys
from typing import Any

import ml_collections

from resnet_jax.errors import ConfigError  # pylint: disable=unused-import  (re-exported)


def sibling(this_file: str, name: str):
  """Imports `name`.py from the directory of `this_file` (a config's base)."""
  path = os.path.join(os.path.dirname(os.path.abspath(this_file)), name + '.py')
  module_name = f'_resnet_jax_config_{name}_{abs(hash(path))}'
  if module_name in sys.modules:
    return sys.modules[module_name]
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  sys.modules[module_name] = module
  return module


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config argument 'depth=56,shortcut=A' into typed fields.

  Args:
    arg: the text after ':' in `--config=configs/x.py:ARG`, or None.
    **defaults: every accepted key with its default; the default's type is the
      type the value is parsed to.

  Returns:
    A ConfigDict with all keys of `defaults`, overridden by `arg`.

  Raises:
    ConfigError: an unknown key or a value of the wrong type.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(','):
    if not item:
      continue
    key, sep, value = item.partition('=')
    key = key.strip()
    if not sep:
      raise ConfigError(
          f'config argument {item!r} is not key=value; valid keys: {sorted(defaults)}')
    if key not in defaults:
      raise ConfigError(
          f'unknown config argument {key!r}; valid keys: {sorted(defaults)}')
    default = defaults[key]
    if isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ConfigError(f'config argument {key}={value!r} must be true or false')
      out[key] = value.lower() in ('true', '1')
    elif isinstance(default, (int, float)):
      try:
        out[key] = type(default)(ast.literal_eval(value))
      except (ValueError, SyntaxError) as e:
        raise ConfigError(
            f'config argument {key}={value!r} must be a {type(default).__name__}') from e
    else:
      out[key] = value
  return out


def load(config_path: str, overrides: dict[str, Any] | None = None,
         ) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:arg]' and applies dotted overrides.

  Equivalent to `--config=PATH[:ARG] --config.key=value ...` on the command line,
  for sweeps, benchmarks and tests that build configs in Python.

  Raises:
    ConfigError: the file does not exist, or an override names an unknown field
      or has the wrong type.
  """
  path, _, arg = config_path.partition(':')
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path!r} does not exist')
  spec = importlib.util.spec_from_file_location(
      f'_resnet_jax_config_{abs(hash(os.path.abspath(path)))}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for key, value in (overrides or {}).items():
    apply_override(config, key, value)
  return config


def apply_override(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets dotted `key` (e.g. 'model.depth') to `value`, type-checked."""
  *parents, leaf = key.split('.')
  node = config
  for p in parents:
    if p not in node:
      raise ConfigError(f'unknown config field {key!r}')
    node = node[p]
  if leaf not in node:
    raise ConfigError(f'unknown config field {key!r}')
  try:
    node[leaf] = value
  except TypeError as e:
    raise ConfigError(f'config field {key!r}: {e}') from e
