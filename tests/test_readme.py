"""README says only what the repository backs: its Python example runs, every file it names is in a clone, its
headline table is the one benchmarks/results renders, and it stays a short guide holding the two set-up commands."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from benchmarks import docs_tables

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 250
MAIN_JOB = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[export]' && .venv/bin/python -m export all && "
    ".venv/bin/python -m runtime info"
)


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
        path = path.split("#")[0]
        if not path or "<" in path or "://" in path or path.startswith(("/", "~", "$")):
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
    text += " and `GET /health` and `/v1/embeddings` and `umull`/`uadalp` and `~/.cache` and `$HOME/x`"
    text += " and [p](docs/p.md#part) and [q](#here)"
    assert named_paths(text) == ["a/b.md", "a/b.json", "c/", "d/e.png", "docs/p.md"]


def git_ignores(path: str) -> bool:
    """Whether git ignores ``path``: an output the user's own runs write (``build/...``), not a file of the clone."""
    try:
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, capture_output=True)
    except FileNotFoundError:  # no git: every named path must exist
        return False
    return done.returncode == 0


def in_clone(path: str, base: Path = REPO) -> bool:
    """Whether a clone has ``path`` (under ``base``; a glob: some file matches it), or it is a git-ignored output."""
    target = (base / path).resolve()
    if not target.is_relative_to(REPO):
        return False
    if any(c in path for c in "*?"):
        return any(base.glob(path))
    return target.exists() or git_ignores(path)


def test_every_file_readme_names_is_in_the_repository() -> None:
    missing = [path for path in named_paths(_readme()) if not in_clone(path)]
    assert not missing, f"README names files a clone does not have: {missing}"


def _headline() -> str:
    (block,) = [b for b in docs_tables.BLOCK.findall(_readme()) if b[1] == "headline"]
    return block[2]


def test_readme_headline_is_rendered_from_the_results() -> None:
    assert _headline().strip(), "README's generated headline block is empty"
    assert docs_tables.refresh_blocks(_readme()) == _readme(), (
        "README's headline table differs from benchmarks/results: run python -m benchmarks.docs_tables"
    )


def test_readme_headline_shows_every_cpu_class_measured() -> None:
    committed = [json.loads(p.read_text(encoding="utf-8")) for p in docs_tables.RESULTS.glob("cpu-*.json")]
    assert committed, "no committed benchmark results"
    for doc in committed:
        assert f"{doc['machine']['cores']}-core" in _headline() and doc["machine"]["isa_class"] in _headline()


def test_readme_is_a_short_guide() -> None:
    assert len(_readme().splitlines()) <= MAX_LINES


def test_readme_main_job_command_is_the_one_documented() -> None:
    assert MAIN_JOB in _readme()


def test_readme_test_command_is_the_ci_script() -> None:
    assert "bash .ci/run" in _readme() and (REPO / ".ci" / "run").is_file()
