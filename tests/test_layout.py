"""The project's modules import each other without a cycle, in the order that
docs/development.md states. Read from the source (every import statement, those
inside functions too), so nothing is imported to check it."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The installed package's names for the repository's folders (setup.py).
FOLDERS = {
    "stn_tf": "stn_tf",
    "stn_tf.pipelines": "pipelines",
    "stn_tf.export": "export",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            found[".".join([package, *(p for p in parts if p != "__init__")])] = path
    return found


def _project_module(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path, modules) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from a import b`: the submodule a.b where there is one, else a.
            targets |= {
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                for a in node.names
            }
    found = {_project_module(t, modules) for t in targets}
    return found - {None, name}


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _reachable(graph, start) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_graph_sees_the_imports_it_must():
    graph = _graph()
    assert "stn_tf.grids" in graph["stn_tf.sampler"]
    assert {"stn_tf.sampler", "stn_tf.grids"} <= graph["stn_tf.transforms"]
    assert "stn_tf.runs" in graph["stn_tf.export.saved_model"]
    assert "stn_tf.pipelines.datasets" in graph["stn_tf.runs"]


def test_no_module_imports_itself_through_others():
    graph = _graph()
    cycles = [name for name in graph if name in _reachable(graph, name)]
    assert not cycles, f"modules in an import cycle: {sorted(cycles)}"


def test_the_layers_follow_the_documented_order():
    # "(grids <- sampler <- transforms <- ...)": each depends on those before it
    # and none on those after it.
    text = (REPO / "docs" / "development.md").read_text()
    (line,) = re.findall(r"\((\w+(?:\s+<-\s+\w+)+)\)", text)
    order = [f"stn_tf.{name}" for name in re.split(r"\s+<-\s+", line)]
    graph = _graph()

    def inside(module, names):  # a module, or any module of a package
        return any(module == n or module.startswith(n + ".") for n in names)

    for i, name in enumerate(order):
        starts = [m for m in graph if inside(m, [name])]
        reached = set().union(*(_reachable(graph, m) for m in starts))
        assert not {m for m in reached if inside(m, order[i + 1 :])}, name
        if i:
            assert {m for m in reached if inside(m, [order[i - 1]])}, name


def test_no_library_function_is_longer_than_80_lines():
    # A reader follows each function of the library on one screen or two
    # (docstrings count: they are read too).
    long = []
    for folder in FOLDERS.values():
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 80:
                        long.append(
                            f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})"
                        )
    assert not long, long
