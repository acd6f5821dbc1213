"""No import cycles in attrdis: no module imports, directly or through other modules, a module
that imports it back. Every import statement counts, those inside functions too (a cycle
that only closes at call time is still one); read from the source with ``ast``, nothing is
imported. An edge is an import statement naming a module: the package ``__init__`` that
Python also runs on the way to a submodule is not one (a package importing its own
submodules, as ``attrdis.synthetic`` does, is no cycle)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "attrdis"


def module_files(root: pathlib.Path = PACKAGE) -> dict[str, pathlib.Path]:
  """{dotted module name: file} of every module of the package (``__init__`` as the
  package's own name)."""
  out = {}
  for path in sorted(root.rglob("*.py")):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def imported_modules(name: str, path: pathlib.Path, known) -> set[str]:
  """The package's modules that ``name`` (its source at ``path``) imports anywhere in the
  file. ``from a.b import c`` names the module ``a.b.c`` when there is one, else ``a.b``."""
  is_package = path.name == "__init__.py"
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = name.split(".")
        parent = parent[: len(parent) - node.level + (1 if is_package else 0)]
        base = ".".join(parent + ([base] if base else []))
      for alias in node.names:
        out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
  return {m for m in out if m in known and m != name}


def import_graph(root: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
  files = module_files(root)
  return {name: imported_modules(name, path, files) for name, path in files.items()}


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
  """A path start → ... → start along the graph's edges, or None."""
  stack, parent = [start], {start: None}
  while stack:
    node = stack.pop()
    for nxt in sorted(graph[node]):
      if nxt == start:
        path = [node]
        while parent[path[-1]] is not None:
          path.append(parent[path[-1]])
        return path[::-1] + [start]
      if nxt not in parent:
        parent[nxt] = node
        stack.append(nxt)
  return None


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path):
  pkg = tmp_path / "attrdis"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from attrdis.sub import b\n")
  (pkg / "sub" / "b.py").write_text("import os\nfrom . import c\n")
  (pkg / "sub" / "c.py").write_text("def f():\n  from attrdis import a\n  return a\n")
  (pkg / "d.py").write_text("from attrdis import a\n")
  graph = import_graph(pkg)
  assert graph["attrdis.a"] == {"attrdis.sub.b"}
  assert graph["attrdis.sub.b"] == {"attrdis.sub.c"}
  assert cycle_through(graph, "attrdis.a") == [
    "attrdis.a",
    "attrdis.sub.b",
    "attrdis.sub.c",
    "attrdis.a",
  ]
  assert cycle_through(graph, "attrdis.d") is None


def test_no_module_imports_a_module_that_imports_it_back():
  graph = import_graph()
  assert "attrdis.evaluation.context" in graph and "attrdis.train" in graph
  cycles = [" → ".join(c) for name in sorted(graph) if (c := cycle_through(graph, name))]
  assert not cycles, "import cycles:\n" + "\n".join(cycles)
