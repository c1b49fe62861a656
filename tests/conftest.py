"""Shared pytest fixtures (kept minimal: each test module sets up its own state)."""

import contextlib
import os
import sys
from typing import Callable

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # `pytest` run without `python -m` or an install.
  sys.path.insert(0, REPO_ROOT)


@pytest.fixture
def repo_root() -> str:
  """Absolute path of the repository (configs/ lives here)."""
  return REPO_ROOT


@contextlib.contextmanager
def jax_settings(**settings):
  """Sets jax.config values for a block, then puts the previous ones back."""
  import jax  # pylint: disable=g-import-not-at-top
  previous = {k: jax.config.values[k] for k in settings}
  for k, v in settings.items():
    jax.config.update(k, v)
  try:
    yield
  finally:
    for k, v in previous.items():
      jax.config.update(k, v)


@pytest.fixture(scope='module')
def fast_compile():
  """XLA without its optimisation passes, for a module of tests.

  Tests compile many small, different graphs once each: the optimisation passes
  would dominate their time. XLA's FLOP counts are the same without them.
  """
  with jax_settings(jax_disable_most_optimizations=True):
    yield


@pytest.fixture(scope='module')
def compile_cache(tmp_path_factory) -> dict[str, str]:
  """Unoptimised XLA and one persistent compilation cache for the test session.

  Returns:
    Environment variables that give subprocesses the same settings and cache:
    a program compiled by one run is loaded by the next instead of compiled again.
  """
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  cache_dir = str(tmp_path_factory.getbasetemp() / 'jax_compilation_cache')
  with jax_settings(jax_disable_most_optimizations=True,
                    jax_persistent_cache_min_compile_time_secs=0,
                    jax_compilation_cache_dir=cache_dir):
    compilation_cache.reset_cache()  # Take the directory into account.
    yield {'JAX_PLATFORMS': 'cpu', 'JAX_DISABLE_MOST_OPTIMIZATIONS': '1',
           'JAX_COMPILATION_CACHE_DIR': cache_dir,
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  compilation_cache.reset_cache()


@pytest.fixture(scope='module')
def child_env(compile_cache) -> Callable[..., dict[str, str]]:
  """`child_env(**extra)`: the environment of a subprocess running this repository's
  code with compile_cache's settings and cache, plus `extra` variables."""

  def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **compile_cache, 'PYTHONPATH': REPO_ROOT, **extra}

  return env
