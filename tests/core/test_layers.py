"""The package's layers (ssl_jax.LAYERS): every import, function-local ones too, goes to
the importer's own layer or a lower one, and no chain of imports closes a cycle."""
import ast
import pathlib

import pytest

import ssl_jax

ROOT = pathlib.Path(__file__).resolve().parents[2]


def module_files(root: pathlib.Path, packages) -> dict[str, pathlib.Path]:
  """{dotted module name: file} of every module of `packages` under `root`."""
  files = {}
  for package in packages:
    for path in sorted((root / package).rglob("*.py")):
      parts = path.relative_to(root).with_suffix("").parts
      name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
      files[name] = path
  return files


def imports_of(name: str, path: pathlib.Path, modules) -> set[str]:
  """The project modules `name` imports anywhere in its file (packages count as their
  __init__; `from P import n` is the module P.n when that is a module, else P)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
  return {target for target in found if target in modules and target != name}


def layer_of(module: str, layers) -> int:
  """Index of the module's layer. A package root counts as the lowest layer: it sets the
  process up before jax starts (ssl_jax/__init__.py) and may import only from there."""
  if "." not in module:
    return 0
  best, index = "", -1
  for i, (_, prefixes) in enumerate(layers):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
        best, index = prefix, i
  if index < 0:
    raise AssertionError(f"{module} is in no layer of ssl_jax.LAYERS: add it there")
  return index


def violations(graph: dict[str, set[str]], layers) -> tuple[list[str], list[list[str]]]:
  """(upward imports as "a -> b (layer x imports layer y)", import cycles as module lists)."""
  names = [name for name, _ in layers]
  upward = [f"{source} -> {target} ({names[layer_of(source, layers)]} imports "
            f"{names[layer_of(target, layers)]})"
            for source, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(target, layers) > layer_of(source, layers)]
  cycles, state = [], {}

  def visit(node, stack):
    state[node] = "open"
    stack.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == "open":
        cycles.append(stack[stack.index(target):] + [target])
      elif target not in state:
        visit(target, stack)
    stack.pop()
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  return upward, cycles


def project_graph(root: pathlib.Path, packages=("ssl_jax", "experiments")):
  modules = module_files(root, packages)
  return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_no_upward_import_and_no_cycle():
  graph = project_graph(ROOT)
  assert len(graph) > 100  # the whole package was parsed
  upward, cycles = violations(graph, ssl_jax.LAYERS)
  assert not upward, "imports that run up a layer:\n" + "\n".join(upward)
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_is_in_a_layer():
  for module in project_graph(ROOT):
    layer_of(module, ssl_jax.LAYERS)


@pytest.fixture
def fake_project(tmp_path):
  """A package whose low layer imports up (a function-local import) and whose high layer
  has a two-module cycle: what the check must catch."""
  files = {
      "pkg/__init__.py": "",
      "pkg/low/__init__.py": "",
      "pkg/low/a.py": "def f():\n  from pkg.high import b\n",
      "pkg/high/__init__.py": "",
      "pkg/high/b.py": "from pkg.high import c\n",
      "pkg/high/c.py": "from . import b\n",
  }
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  return tmp_path


def test_the_check_sees_an_upward_import_and_a_cycle(fake_project):
  layers = (("low", ("pkg.low",)), ("high", ("pkg.high",)))
  upward, cycles = violations(project_graph(fake_project, ("pkg",)), layers)
  assert upward == ["pkg.low.a -> pkg.high.b (low imports high)"]
  assert [sorted(set(cycle)) for cycle in cycles] == [["pkg.high.b", "pkg.high.c"]]
