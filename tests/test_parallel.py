"""The package uses jax's current parallel API only (no pmap-era calls)."""

import ast
import pathlib

import resnet_jax

# Removed or deprecated since jax 0.8 (jax CHANGELOG), and flax's pmap helpers.
PMAP_ERA_ATTRIBUTES = {'pmap', 'device_put_replicated', 'device_put_sharded',
                       'PmapSharding', 'prefetch_to_device'}
PMAP_ERA_MODULES = {'flax.jax_utils'}


def pmap_era_uses(source: str) -> list[str]:
  """Line-numbered pmap-era uses in Python source (calls, imports, `with mesh:`)."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Attribute) and node.attr in PMAP_ERA_ATTRIBUTES:
      found.append(f'{node.lineno}: .{node.attr}')
    elif isinstance(node, ast.ImportFrom):
      names = {a.name for a in node.names}
      if (node.module in PMAP_ERA_MODULES
          or (node.module == 'flax' and 'jax_utils' in names)
          or names & PMAP_ERA_ATTRIBUTES):
        found.append(f'{node.lineno}: from {node.module} import {", ".join(sorted(names))}')
    elif isinstance(node, ast.Import):
      found += [f'{node.lineno}: import {a.name}' for a in node.names
                if a.name in PMAP_ERA_MODULES]
    elif isinstance(node, ast.With):
      # `with mesh:` (deprecated in 0.10.1 for jax.set_mesh).
      for item in node.items:
        expr = item.context_expr
        name = expr.id if isinstance(expr, ast.Name) else getattr(expr, 'attr', '')
        if 'mesh' in name.lower() and not isinstance(expr, ast.Call):
          found.append(f'{node.lineno}: with {name}:')
  return sorted(found, key=lambda use: int(use.split(':')[0]))


def test_the_checker_finds_each_pmap_era_form():
  source = '\n'.join([
      'import jax', 'from flax import jax_utils', 'import flax.jax_utils',
      'f = jax.pmap(g)', 'x = jax.device_put_replicated(x, d)',
      'y = jax.device_put_sharded(s, d)', 'with mesh:', '  pass',
      'with exp.mesh:', '  pass', 'with jax.set_mesh(mesh):', '  pass'])
  assert [u.split(':')[0] for u in pmap_era_uses(source)] == [
      '2', '3', '4', '5', '6', '7', '9']


def test_no_pmap_era_api_in_the_package():
  root = pathlib.Path(resnet_jax.__file__).parent
  uses = {str(p.relative_to(root)): u for p in sorted(root.rglob('*.py'))
          if (u := pmap_era_uses(p.read_text()))}
  assert not uses, uses
