"""A griffe extension (mkdocs.yml, mkdocstrings ``extensions:``): the runtime's docstrings read well as Markdown.

They are written for ``help()``: BERT's special tokens appear plainly ("[CLS] [SEP]", which Markdown takes for a
reference link and mkdocs-autorefs reports as a missing cross-reference), and a few Sphinx roles (:func:`x`) appear
as in reStructuredText. Both become inline code.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

TOKEN = re.compile(r"(?<!`)\[(CLS|SEP|PAD|UNK|MASK)\](?!`)")
ROLE = re.compile(r":(?:func|meth|mod|class|attr|data|exc):(`[^`]+`)")


class DocstringMarkup(Extension):
    """``[CLS]`` as code instead of a reference link, ``:func:`x``` as plain ``x`` code."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"\1", TOKEN.sub(r"`[\1]`", obj.docstring.value))
