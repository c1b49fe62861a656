"""Loading ml_collections config files outside absl flags, and config-file helpers.

Config files under `configs/` are plain Python loaded by path (as `config_flags`
does), so they cannot rely on `configs` being importable. They load their base
with `configlib.sibling(__file__, 'base')` instead, which works from any cwd.
"""

import ast
import contextlib
import difflib
import importlib.util
import os
import sys
import sysconfig
import traceback
from typing import Any, Iterator

import ml_collections

from resnet_jax import errors
from resnet_jax.errors import ConfigError

# Where the interpreter, installed packages and this package live: a frame
# elsewhere is in a user's file (a config or sweep file).
_NOT_USER_CODE = tuple(sorted({
    os.path.join(os.path.realpath(p), '') for p in (
        sys.prefix, sys.base_prefix, sys.exec_prefix,
        *(sysconfig.get_paths().get(k, '') for k in ('stdlib', 'platstdlib', 'purelib',
                                                     'platlib')),
        os.path.dirname(os.path.abspath(__file__))) if p}))


def _is_user_file(filename: str) -> bool:
  if not filename or filename.startswith('<'):  # <frozen ...>, <string>
    return False
  return not os.path.join(os.path.realpath(filename), '').startswith(_NOT_USER_CODE)


def user_code_error(error: BaseException, kind: str = '') -> str | None:
  """'FILE, line N: NameError: ...' when `error` came from code in a user's file.

  The innermost exception of the chain (ml_collections re-raises a config
  file's TypeError as a new one) that was raised in, or passed through, a
  file outside the interpreter, the installed packages and this package,
  named by its innermost such frame. None when there is none (then the error
  is not the file's own).

  Args:
    error: the exception caught.
    kind: 'config' or 'sweep', to say 'config file FILE'; '' for 'FILE'.
  """
  prefix = f'{kind} file ' if kind else ''
  for e in reversed(errors.chain(error)):
    if isinstance(e, SyntaxError) and _is_user_file(e.filename or ''):
      return f'{prefix}{e.filename}, line {e.lineno}: {type(e).__name__}: {e.msg}'
    frames = [f for f in traceback.extract_tb(e.__traceback__) if _is_user_file(f.filename)]
    if frames:
      text = ' '.join(str(e).split()) or repr(e)
      if len(text) > 300:
        text = text[:300] + '...'
      return (f'{prefix}{frames[-1].filename}, line {frames[-1].lineno}: '
              f'{type(e).__name__}: {text}')
  return None


@contextlib.contextmanager
def errors_of(path: str, kind: str = 'config') -> Iterator[None]:
  """Raises what the code of a config or sweep file raises as a one-line ConfigError.

  A ConfigError (the file's own message) passes unchanged; any other error
  names the file and line it came from.
  """
  try:
    yield
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught
    where = user_code_error(e, kind) or (
        f'{kind} file {path}: {type(e).__name__}: {" ".join(str(e).split())}')
    raise ConfigError(where) from e


def load_module(path: str, kind: str = 'config'):
  """Imports the Python file at `path` as a fresh module (configs, sweep files).

  Config and sweep files are plain Python loaded by path, as `config_flags`
  loads configs: they need not be importable as a package.

  Args:
    path: the file.
    kind: what the file is, for the error message ('config', 'sweep').

  Raises:
    ConfigError: the file does not exist, or running it raised (a syntax
      error, a failed import, ...): the message names the file and line.
  """
  if not os.path.isfile(path):
    raise ConfigError(f'{kind} file {path!r} does not exist')
  path = os.path.abspath(path)
  spec = importlib.util.spec_from_file_location(
      f'_resnet_jax_{kind}_{os.path.splitext(os.path.basename(path))[0]}_'
      f'{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(spec)
  with errors_of(path, kind):
    spec.loader.exec_module(module)
  return module


def sibling(this_file: str, name: str):
  """Imports `name`.py from the directory of `this_file` (a config's base), once."""
  path = os.path.join(os.path.dirname(os.path.abspath(this_file)), name + '.py')
  # Cached: configs derived from one base share its module (and its functions).
  if path not in _SIBLINGS:
    _SIBLINGS[path] = load_module(path)
  return _SIBLINGS[path]


_SIBLINGS = {}


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
    ConfigError: the file does not exist or raises, or an override names an
      unknown field or has the wrong type.
  """
  path, _, arg = config_path.partition(':')
  module = load_module(path)
  with errors_of(path):
    config = module.get_config(arg or None)
  for key, value in (overrides or {}).items():
    apply_override(config, key, value)
  return config


def _fields(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  """Every dotted field of a config ('model.depth', ...), sections included."""
  out = []
  for key, value in config.items():
    out.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      out += _fields(value, f'{prefix}{key}.')
  return out


def unknown_field(config: ml_collections.ConfigDict, key: str) -> ConfigError:
  """The error for an override of a field the config does not have, with a suggestion."""
  close = difflib.get_close_matches(key, _fields(config), n=1)
  hint = f"; did you mean '{close[0]}'?" if close else ''
  return ConfigError(f'unknown config field {key!r}{hint}')


def apply_override(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets dotted `key` (e.g. 'model.depth') to `value`, type-checked."""
  *parents, leaf = key.split('.')
  node = config
  for p in parents:
    if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
      raise unknown_field(config, key)
    node = node[p]
  if leaf not in node:
    raise unknown_field(config, key)
  try:
    node[leaf] = value
  except TypeError as e:
    raise ConfigError(f'config field {key!r}: {e}') from e


# configs/base.py of this checkout: every field's default (see load_stored).
BASE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'configs', 'base.py')


def _merge(config: ml_collections.ConfigDict, values: dict[str, Any]) -> None:
  """Sets `values` (a nested dict) on `config`, adding fields it lacks."""
  for key, value in values.items():
    if isinstance(value, dict) and key in config and isinstance(
        config[key], ml_collections.ConfigDict):
      _merge(config[key], value)
    elif key in config and isinstance(config[key], tuple) and isinstance(value, list):
      config[key] = tuple(value)  # JSON has no tuples.
    else:
      config[key] = value


def load_stored(path: str) -> ml_collections.ConfigDict:
  """The config a run recorded in its workdir (`WORKDIR/config.json`), locked.

  `path` is a workdir, its `checkpoints/` directory, a step directory, or the
  config.json itself. Fields the record lacks (added to the code since) take
  configs/base.py's defaults where this checkout has it. For evaluating,
  resuming or exporting a run without repeating its --config.

  Raises:
    ConfigError: there is no config.json there.
  """
  import json  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.path.expanduser(path))
  candidates = [path] if path.endswith('.json') else [
      os.path.join(p, 'config.json') for p in (
          path, os.path.dirname(path), os.path.dirname(os.path.dirname(path)))]
  found = next((c for c in candidates if os.path.isfile(c)), None)
  if found is None:
    raise ConfigError(f'no config.json at or above {path}: pass --config (the config '
                      'the checkpoint was trained with)')
  with open(found, encoding='utf-8') as f:
    values = json.load(f)
  config = (load_module(BASE_CONFIG).get_config() if os.path.isfile(BASE_CONFIG)
            else ml_collections.ConfigDict())
  with config.unlocked():
    _merge(config, values)
  config.lock()
  return config
