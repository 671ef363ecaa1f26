"""mkdocs hooks (mkdocs.yml ``hooks:``): fill the results placeholders of every page and serve the results' charts.

The tables and figures come from ``benchmarks/results/*.json`` through ``benchmarks.docs_tables``; a placeholder naming
a missing file or key fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # mkdocs loads this file by path; the renderer lives in the checkout's benchmarks/
    sys.path.insert(0, str(REPO))

from mkdocs.exceptions import PluginError  # noqa: E402
from mkdocs.structure.files import File, Files  # noqa: E402

from benchmarks import docs_sections, docs_tables  # noqa: E402


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Each page's placeholders, rendered from the results files; one that cannot be rendered stops the build."""
    try:
        return docs_tables.render(markdown)
    except docs_tables.DocsError as err:
        raise PluginError(f"{page.file.src_path}: {err}") from err


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """The results' charts, served at ``results/<name>.png`` so that rendered tables can show them."""
    for png in sorted(docs_tables.RESULTS.glob("*.png")):
        files.append(File.generated(config, f"{docs_sections.IMAGES}/{png.name}", abs_src_path=str(png)))
    return files
