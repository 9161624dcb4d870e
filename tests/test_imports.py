"""The package's imports flow one way: no cycle anywhere, and nothing imports the command line.

Every `import` / `from ... import` of an `emoknn` module counts, at module level or inside a
function (a deferred import still ties the two modules together), read with `ast` from the
source files, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import emoknn

PACKAGE = Path(emoknn.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules that `path` (module `name`) imports, resolved to known module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            # `from emoknn import demo` imports the module emoknn.demo; `from emoknn.x import f`
            # imports emoknn.x.
            targets = [f"{root}.{alias.name}" for alias in node.names] + [root]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    graph = {name: imported_modules(path, name, known) for name, path in modules.items()}
    # A package's __init__ runs when any of its modules is imported: that edge is real, but the
    # package importing its own modules (to re-export them) is not a cycle with them.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child):], child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph.get(child, ()))))
    return None


def test_the_graph_sees_deferred_and_relative_imports():
    graph = import_graph()
    assert "emoknn.errors" in graph["emoknn.audio"]
    assert graph["emoknn.errors"] == set()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_nothing_imports_the_command_line():
    graph = import_graph()
    cli = {name for name in graph if name == "emoknn.cli" or name.startswith("emoknn.cli.")}
    users = sorted(name for name, targets in graph.items()
                   if name not in cli and name != "emoknn.__main__" and targets & cli)  # fmt: skip
    assert not users, f"the command line is imported by {users}"
