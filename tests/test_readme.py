"""README says only what the repository backs: its Python example runs, every file it names is in a clone, and its
benchmark tables are the committed results."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FIGURES_HEADER = "| system | dev b1"


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", _readme(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def named_paths(text: str) -> list[str]:
    """Repository paths named in ``text``: `code spans` holding a slash, and link or image targets; ``{a,b}``
    alternatives expanded; placeholders such as ``<name>``, web addresses and HTTP routes (``/health``) left out."""
    spans = [span for span in re.findall(r"`([^`]*)`", text) if "/" in span and not re.search(r"\s", span)]
    found = spans + re.findall(r"\]\(([^)\s]+)\)", text)
    paths = []
    for path in found:
        if "<" in path or "://" in path or path.startswith("/"):
            continue
        alternatives = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", path)
        if alternatives:
            head, options, tail = alternatives.groups()
            paths += [head + option + tail for option in options.split(",")]
        else:
            paths.append(path)
    return paths


def test_named_paths_understands_braces_and_placeholders() -> None:
    text = "`a/b.{md,json}` and `artifacts/<name>/x` and [c](d/e.png) and `c/` and [w](https://x.org/y)"
    text += " and `GET /health` and `/v1/embeddings` and `umull`/`uadalp`"
    assert named_paths(text) == ["a/b.md", "a/b.json", "c/", "d/e.png"]


def _ignored(path: str) -> bool:
    """Whether git ignores ``path``: an output the user's own runs write (``build/...``), not a file of the clone."""
    try:
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, capture_output=True)
    except FileNotFoundError:  # no git: every named path must exist
        return False
    return done.returncode == 0


def test_every_file_readme_names_is_in_the_repository() -> None:
    missing = []
    for path in named_paths(_readme()):
        target = (REPO / path).resolve()
        if not target.is_relative_to(REPO) or (not target.exists() and not _ignored(path)):
            missing.append(path)
    assert not missing, f"README names files a clone does not have: {missing}"


def figures_tables(text: str) -> list[tuple[str, list[str]]]:
    """Each benchmark figures table in ``text`` with the result file named closest above it."""
    lines = text.splitlines()
    tables = []
    for i, line in enumerate(lines):
        if not line.startswith(FIGURES_HEADER):
            continue
        above = "\n".join(lines[:i])
        names = re.findall(r"benchmarks/results/(cpu-[a-z0-9-]+)\.", above)
        assert names, f"README line {i + 1}: benchmark table without its result file named above it"
        rows = []
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            rows.append(row)
        tables.append((names[-1], rows))
    return tables


def test_readme_benchmark_tables_are_the_committed_results() -> None:
    tables = figures_tables(_readme())
    assert tables, "README shows no benchmark table"
    for stem, rows in tables:
        result = REPO / "benchmarks" / "results" / f"{stem}.md"
        lines = result.read_text(encoding="utf-8").splitlines()
        start = lines.index(next(line for line in lines if line.startswith(FIGURES_HEADER)))
        body = []
        for row in lines[start + 2 :]:
            if not row.startswith("|"):
                break
            body.append(row)
        assert rows == body, f"README's table for {stem} differs from {result.relative_to(REPO)}"


def test_readme_shows_every_instruction_set_class_measured() -> None:
    shown = {stem for stem, _ in figures_tables(_readme())}
    committed = {p.stem for p in (REPO / "benchmarks" / "results").glob("cpu-*.json")}
    assert committed, "no committed benchmark results"
    assert shown == committed, f"README shows {sorted(shown)}, results hold {sorted(committed)}"


def test_readme_test_command_is_the_ci_script() -> None:
    assert "bash .ci/run" in _readme() and (REPO / ".ci" / "run").is_file()
