"""Shared pytest fixtures (kept minimal: each test module sets up its own state)."""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # `pytest` run without `python -m` or an install.
  sys.path.insert(0, REPO_ROOT)


@pytest.fixture
def repo_root() -> str:
  """Absolute path of the repository (configs/ lives here)."""
  return REPO_ROOT
