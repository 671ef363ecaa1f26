"""The docs site says only what the repository backs: every figure comes from a results file through a placeholder,
every results file is shown, every page is in the navigation, its examples run and the files it names exist.

``mkdocs build --strict`` (run by .ci/run) checks links and anchors; these tests need no mkdocs.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks import docs_tables
from benchmarks.docs_tables import COMBINED, KINDS
from tests.test_readme import README, REPO, in_clone, named_paths

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
LOG = DOCS / "decisions.md"
GUIDE = [page for page in PAGES if page != LOG]  # pages that describe current behaviour: no typed figures
CPU = "cpu-2core-amd-epyc-avx512vnni"

# A figure that reads as a measurement: a number with a unit of speed, time, size or share, a ratio with a decimal
# (1.25x), a decimal with three or more places (0.8938), or a table cell holding a decimal number alone. Limits and
# constants are written without these units, or inside code spans (`--graceful-timeout`, `TOKENS_PER_RUN`), which the
# check leaves alone.
UNITS = r"texts/s|req/s|requests/s|queries/s|G-ops/s|G-flop/s|MiB|MB|GB|GiB|ms|µs|%"
MEASURED = re.compile(
    rf"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:\s?(?:{UNITS})|\ss)(?![\w/])"
    r"|(?<![\w.])\d+\.\d+\s?[\u00d7x](?!\w)"
    r"|(?<![\w.])\d+\.\d{3,}"
    r"|\|\s*[\d,]*\.\d+\s*(?=\||\()"
)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def hand_typed_figures(text: str) -> list[str]:
    """Lines of ``text`` that state a measured figure by hand: outside code, placeholders and generated blocks."""
    text = docs_tables.BLOCK.sub("", text)
    text = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.DOTALL)
    text = docs_tables.FIG.sub("", docs_tables.TABLE.sub("", text))
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        plain = re.sub(r"`[^`]*`|\]\([^)]*\)", "", line)  # code spans, link targets
        if MEASURED.search(plain):
            found.append(f"{number}: {line.strip()}")
    return found


def test_hand_typed_check_finds_typed_figures() -> None:
    typed = [
        "The server did 553 texts/s.",
        "int8 keeps 0.8938 spearman.",
        "It ran 1.20x faster.",
        "| runtime-int8 | 841 (3.21\u00d7) |",
        "| grid | 0.97436 |",
        "| model | 22.5 |",
        "RSS grew by 2.6 %.",
        "The drain waits 0.5 s.",
    ]
    assert len(hand_typed_figures("\n".join(typed))) == len(typed)
    fine = [
        "One run holds at most 1,024 padded tokens, 4 texts of 256 tokens.",
        "{{ fig server-x: a.b | ,.0f }} texts/s, and `--graceful-timeout` (`30` s)",
        "<!-- table: server -->",
        "| `--max-inflight-inputs` | 1,024 | admitted inputs |",
        "| GELU output, shifted by +0.17 | [0, 127] | 32,258 |",
        "health checks and 429s are answered; 16 clients keep 32-text requests queued",
        "```\n| 0.8938 |\n```",
    ]
    assert hand_typed_figures("\n".join(fine)) == []


@pytest.mark.parametrize("page", [*GUIDE, README], ids=lambda p: p.name)
def test_guide_pages_type_no_figures(page: Path) -> None:
    typed = hand_typed_figures(_text(page))
    assert not typed, f"{page.name} states figures by hand (use a placeholder, or date it in decisions.md): {typed}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_placeholder_renders(page: Path) -> None:
    rendered = docs_tables.render(_text(page))
    leftover = re.findall(r"<!-- *table.*?-->|\{\{.*?\}\}", rendered)
    assert not leftover, f"{page.name}: placeholders the renderer does not understand: {leftover}"


def test_every_results_file_is_shown() -> None:
    used = [m.groups() for page in PAGES for m in docs_tables.TABLE.finditer(_text(page))]
    shown: set[str] = set()
    for kind, stem in used:
        if stem:
            shown.add(stem)
        elif kind in KINDS:
            shown |= {p.stem for p in docs_tables.RESULTS.glob(KINDS[kind].pattern)}
    hidden = {p.stem for p in docs_tables.RESULTS.glob("*.json")} - shown
    assert not hidden, f"results files no docs page shows (give them a kind in docs_tables.KINDS): {sorted(hidden)}"
    assert set(COMBINED) | {"cpu"} <= {kind for kind, _ in used}


def test_unknown_kind_file_or_key_fails() -> None:
    cases = [
        "<!-- table: no-such-kind -->",
        "<!-- table: cpu cpu-no-such-machine -->",
        f"<!-- table: server {CPU} -->",  # a cpu-* file is not a server file
        "{{ fig no-such-file: a | .2f }}",
        f"{{{{ fig {CPU}: systems.runtime-int8.best.no_such_key | .2f }}}}",
        f"{{{{ fig {CPU}: systems.runtime-int8.best.throughput.dev@32 }}}}",  # a float needs a format
    ]
    for case in cases:
        with pytest.raises(docs_tables.DocsError):
            docs_tables.render(case)


def test_figure_is_the_results_value() -> None:
    doc = json.loads((docs_tables.RESULTS / f"{CPU}.json").read_text(encoding="utf-8"))
    value = doc["systems"]["runtime-int8"]["best"]["throughput"]["dev@32"]
    assert docs_tables.render(f"{{{{ fig {CPU}: systems.runtime-int8.best.throughput.dev@32 | ,.1f }}}}") == (
        f"{value:,.1f}"
    )
    assert docs_tables.fig("manifest", "variants.int8.precision") == "int8"


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """A copy of the committed results to change."""
    return Path(shutil.copytree(docs_tables.RESULTS, tmp_path / "results"))


def _edit(results: Path, stem: str, change: object) -> None:
    path = results / f"{stem}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc), encoding="utf-8")


def test_tables_follow_the_results(results: Path) -> None:
    def faster(doc: dict) -> None:
        doc["systems"]["runtime-int8"]["best"]["throughput"]["dev@32"] = 98765.4

    _edit(results, CPU, faster)
    assert "98,765" in docs_tables.table("headline", results=results)
    assert "98,765" in docs_tables.table("cpu", results=results)
    assert docs_tables.refresh_blocks(_text(README), results) != _text(README)


def test_a_results_file_missing_a_key_fails(results: Path) -> None:
    server = next(p.stem for p in results.glob(KINDS["server"].pattern))
    _edit(results, server, lambda doc: doc.pop("library"))
    with pytest.raises(docs_tables.DocsError):
        docs_tables.table("server", results=results)


def test_a_new_cpu_class_appears_by_itself(results: Path) -> None:
    doc = json.loads((results / f"{CPU}.json").read_text(encoding="utf-8"))
    doc["machine"].update(name="cpu-2core-intel-xeon-amx", cpu_model="Intel Xeon Test", isa_class="amx")
    (results / "cpu-2core-intel-xeon-amx.json").write_text(json.dumps(doc), encoding="utf-8")
    assert "Intel Xeon Test (amx)" in docs_tables.table("headline", results=results)
    assert "cpu-2core-intel-xeon-amx" in docs_tables.table("cpu", results=results)


def test_every_page_is_in_the_navigation() -> None:
    nav = re.findall(r":\s*([\w-]+\.md)\s*$", _text(REPO / "mkdocs.yml"), flags=re.MULTILINE)
    assert sorted(nav) == sorted(p.name for p in PAGES)


def test_decision_log_entries_are_dated_newest_first() -> None:
    headings = re.findall(r"^## (.*)$", _text(LOG), flags=re.MULTILINE)
    undated = [h for h in headings if not re.match(r"\d{4}-\d{2}-\d{2}: \S", h)]
    assert headings and not undated, f"decisions.md entries without a date: {undated}"
    days = [h[:10] for h in headings]
    assert days == sorted(days, reverse=True)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("page", [p for p in PAGES if _python_blocks(_text(p))], ids=lambda p: p.name)
def test_docs_python_examples_run(page: Path) -> None:
    for block in _python_blocks(_text(page)):
        if page.name == "server.md":  # needs a server: it is README's example, which tests/test_server.py runs
            (readme_block,) = re.findall(r"```python server\n(.*?)```", _text(README), flags=re.DOTALL)
            assert block == readme_block
            continue
        exec(compile(block, str(page), "exec"), {})


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_name_only_files_in_the_repository(page: Path) -> None:
    missing = [path for path in named_paths(_text(page)) if not in_clone(path) and not in_clone(path, DOCS)]
    assert not missing, f"{page.name} names files a clone does not have: {missing}"
