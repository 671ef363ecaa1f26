"""Benchmark figures for the README and the docs site, rendered from ``benchmarks/results/*.json``, never typed by hand.

Two placeholders, filled when the site is built (``docs/hooks.py``) and checked by ``tests/test_docs.py``:

- ``<!-- table: KIND -->`` renders every results file of KIND (a glob, so a new CPU class's file appears by itself),
  ``<!-- table: KIND STEM -->`` one file; ``KINDS`` lists the kinds, ``COMBINED`` the tables drawn from several
  files (``headline``, ``runtime-systems``, ``accuracy``).
- ``{{ fig STEM: a.b.c | FORMAT }}`` one figure: STEM a results file (or ``manifest``, the shipped artifact's), the
  path dotted keys (list items by index or ``key=value``), FORMAT a Python format spec (required for floats).

The README embeds generated tables between ``<!-- generated: KIND -->`` and ``<!-- end generated -->``:
``python -m benchmarks.docs_tables`` rewrites those blocks after new results, ``--check`` fails while they are stale.
Standard library only (and the report code), so the runtime-only test environment and the docs build can run it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import docs_sections as product
from benchmarks import docs_studies as studies
from benchmarks.docs_sections import MANIFEST, REPO

RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"

TABLE = re.compile(r"<!-- table: ([a-z0-9-]+)(?: ([A-Za-z0-9._-]+))? -->")
FIG = re.compile(r"\{\{ fig ([A-Za-z0-9._-]+): ([^|}]+?)(?: \| ([^}]+?))? \}\}")
BLOCK = re.compile(r"(<!-- generated: ([a-z0-9-]+) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)


class DocsError(ValueError):
    """A placeholder names a kind, results file or key that does not exist."""


@dataclass(frozen=True)
class Kind:
    """One kind of results file: which files (a glob in benchmarks/results) and how one of them reads as markdown."""

    pattern: str
    render: Callable[[dict[str, Any], str, Path], list[str]]


KINDS: dict[str, Kind] = {
    "cpu": Kind(product.CPU_FILES, product.cpu_section),
    "gpu": Kind("gpu-*.json", product.gpu_section),
    "server": Kind("server-*.json", product.server_runs),
    "server-workers": Kind("server-*.json", product.server_workers),
    "corpus": Kind("corpus-cpu-*.json", studies.corpus_local),
    "corpus-scale": Kind("corpus-scale-*.json", studies.corpus_scale),
    "corpus-memory": Kind("corpus-memory-*.json", studies.corpus_memory),
    "precision": Kind("precision-*.json", studies.precision_types),
    "precision-grids": Kind("precision-*.json", studies.precision_grids),
    "crosscpu": Kind("crosscpu-*.json", studies.crosscpu),
    "kernels": Kind("kernels-*.json", studies.kernels),
    "profile": Kind("profile-*.json", studies.profile),
    "soak": Kind("soak*.json", studies.soak),
    "engines": Kind("engines-*.json", studies.engines),
    "gates": Kind("gates-*.json", studies.gates),
}
# Tables drawn from several files: the README's headline, every runtime configuration per CPU class, accuracy.
COMBINED: dict[str, Callable[[Path], list[str]]] = {
    "headline": product.headline,
    "runtime-systems": product.runtime_systems,
    "auto-rules": product.auto_rules,
    "accuracy": product.accuracy,
}


def load(stem: str, results: Path = RESULTS) -> dict[str, Any]:
    """A results file by stem; ``manifest`` is the shipped artifact's manifest.json."""
    path = MANIFEST if stem == "manifest" else results / f"{stem}.json"
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DocsError(f"{path}: no such results file") from None
    return doc


def lookup(doc: Any, path: str, stem: str = "") -> Any:
    """The value at ``a.b.0.c`` or ``a.rows.name=x.c`` in a JSON document; DocsError names the step that is missing."""
    value = doc
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        elif isinstance(value, list) and "=" in step:
            key, wanted = step.split("=", 1)
            found = [item for item in value if isinstance(item, dict) and str(item.get(key)) == wanted]
            if not found:
                raise DocsError(f"{stem}: no list item with {step} on the way to {path!r}")
            value = found[0]
        else:
            raise DocsError(f"{stem}: no {step!r} on the way to {path!r}")
    return value


def fig(stem: str, path: str, spec: str | None = None, results: Path = RESULTS) -> str:
    """One figure, formatted. A float needs a format spec: how many digits it deserves is the writer's call."""
    path = path.strip()
    value = lookup(load(stem, results), path, stem)
    if isinstance(value, dict | list) or value is None:
        raise DocsError(f"{stem}: {path} is not a figure ({type(value).__name__})")
    if isinstance(value, float) and not spec:
        raise DocsError(f"{stem}: {path} is a float: give a format, as in {{{{ fig {stem}: {path} | .3f }}}}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return format(value, spec.strip() if spec else ",")


def table(kind: str, stem: str | None = None, results: Path = RESULTS) -> str:
    """The markdown a ``<!-- table: KIND [STEM] -->`` placeholder stands for."""
    if kind in COMBINED and stem is None:
        return "\n".join(COMBINED[kind](results))
    if kind not in KINDS:
        raise DocsError(f"unknown table kind {kind!r} (known: {sorted([*KINDS, *COMBINED])})")
    pattern, draw = KINDS[kind].pattern, KINDS[kind].render
    stems = [stem] if stem else [path.stem for path in sorted(results.glob(pattern))]
    if not stems:
        raise DocsError(f"table {kind!r}: no results file matches benchmarks/results/{pattern}")
    for name in stems:
        if not Path(f"{name}.json").match(pattern):
            raise DocsError(f"table {kind!r} takes {pattern} files, not {name}")
    try:
        return "\n\n".join("\n".join(draw(load(name, results), name, results)) for name in stems)
    except KeyError as err:
        raise DocsError(f"table {kind!r}: a results file lacks the key {err}") from err


def render(text: str, results: Path = RESULTS) -> str:
    """``text`` with every placeholder replaced by what it stands for."""
    text = TABLE.sub(lambda m: table(m.group(1), m.group(2), results), text)
    return FIG.sub(lambda m: fig(m.group(1), m.group(2), m.group(3), results), text)


def refresh_blocks(text: str, results: Path = RESULTS) -> str:
    """``text`` (the README) with each ``<!-- generated: KIND -->`` block rendered again from the results."""
    return BLOCK.sub(lambda m: m.group(1) + table(m.group(2), None, results) + "\n" + m.group(4), text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.docs_tables", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README's generated blocks are stale")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    fresh = refresh_blocks(text)
    if args.check and fresh != text:
        sys.exit("README's generated tables differ from benchmarks/results: run python -m benchmarks.docs_tables")
    if not args.check:
        README.write_text(fresh, encoding="utf-8")


if __name__ == "__main__":
    main()
