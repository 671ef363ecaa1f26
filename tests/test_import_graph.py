"""runtime/'s modules import one another without a cycle: shared pieces live in a module below those that use them."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (function-level imports too).

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``. A submodule's implicit
    import of its parent package's ``__init__`` is not an edge: only what the code names.
    """
    root = package.parent
    modules = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        named: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                named += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import; this check reads absolute ones only"
                named += [f"{node.module}.{alias.name}" for alias in node.names]
        graph[name] = {t for t in map(resolve, named) if t is not None and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_runtime_modules_import_one_another_without_a_cycle() -> None:
    graph = import_graph(RUNTIME)
    assert "runtime.corpus.job" in graph and "runtime.corpus.encoding" in graph["runtime.corpus.ray_job"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_a_function_level_import_cycle(tmp_path: Path) -> None:
    # the layout this check replaced: job imported ray_job inside a function, ray_job imported job at the top
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text("def run():\n    from pkg import ray_job\n")
    (package / "ray_job.py").write_text("from pkg.job import run\n")
    (package / "other.py").write_text("import pkg.job\n")
    assert find_cycle(import_graph(package)) in (
        ["pkg.job", "pkg.ray_job", "pkg.job"],
        ["pkg.ray_job", "pkg.job", "pkg.ray_job"],
    )
