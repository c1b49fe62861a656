"""The documentation names only paths that exist (README.md, docs/CONTRACTS.md).

A path in backticks that starts at one of the repository's top folders must
exist (`{a,b}` alternatives each); in README's "What is where" table, a bare
file name must exist in the folder (or beside a file) its row's first cell
names. Placeholders (WORKDIR/..., DATA_DIR/...), commands and URLs are not paths.
"""

import itertools
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP = ('resnet_jax/', 'configs/', 'benchmarks/', 'experiments/', 'tests/', 'docs/', '.ci/')
DOCS = ('README.md', os.path.join('docs', 'CONTRACTS.md'))


def _expand(token: str) -> list[str]:
  """'a/{b,c}.py' -> ['a/b.py', 'a/c.py']."""
  parts = re.split(r'\{([^}]*)\}', token)
  choices = [[p] if i % 2 == 0 else p.split(',') for i, p in enumerate(parts)]
  return [''.join(c) for c in itertools.product(*choices)]


def _path(token: str) -> str:
  """The path a backticked token names: its first word, config arguments cut."""
  word = token.split()[0] if token.split() else ''
  return word.split(':')[0].rstrip('.,;')


def _exists(path: str) -> bool:
  return os.path.exists(os.path.join(ROOT, path.rstrip('/')))


@pytest.mark.parametrize('doc', DOCS)
def test_every_path_named_exists(doc):
  with open(os.path.join(ROOT, doc), encoding='utf-8') as f:
    text = f.read()
  missing = []
  for token in re.findall(r'`([^`\n]+)`', text):
    path = _path(token)
    if path.startswith(TOP):
      missing += [p for p in _expand(path) if not _exists(p)]
  assert not missing, f'{doc} names paths that do not exist: {sorted(set(missing))}'


def test_the_what_is_where_table_names_files_that_exist():
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  table = text.split('## What is where', 1)[1].split('\n## ', 1)[0]
  rows = [line for line in table.splitlines() if line.startswith('| `')]
  assert len(rows) >= 10, table
  missing = []
  for row in rows:
    first, *rest = row.strip('|').split('|')
    bases = [p for t in re.findall(r'`([^`]+)`', first) for p in _expand(_path(t))]
    folders = {b if b.endswith('/') else os.path.dirname(b) + '/' for b in bases} | {''}
    for token in re.findall(r'`([^`\n]+)`', '|'.join([first] + rest)):
      for name in _expand(_path(token)):
        if name.endswith(('.py', '.sh', '.md', '/')) and not name.startswith(('.', 'WORKDIR')):
          if not any(_exists(os.path.join(folder, name)) for folder in folders):
            missing.append(f'{name} (row {first.strip()})')
  assert not missing, f'README "What is where" names files that do not exist: {missing}'
