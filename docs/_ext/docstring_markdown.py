"""A Griffe extension for the API reference: our docstrings as Markdown reads them.

The docstrings are written for ``help()`` and doctest: their examples are bare ``>>>`` lines, which Markdown
would render as nested block quotes, and a few use reStructuredText's ``::`` before an indented block. This
puts each run of ``>>>`` lines (with its ``...`` continuations and expected output) in a ``pycon`` fence and
turns a trailing ``::`` into ``:``. It changes only what the site shows, not the code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

PROMPT = re.compile(r"^(\s*)>>> ")


def fence_doctests(text: str) -> str:
    """``text`` with every doctest run (its ``>>>`` lines, continuations and expected output, up to a blank
    line) fenced as ``pycon`` at the indentation of its first prompt, and a trailing ``::`` made ``:``."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        found = PROMPT.match(lines[i])
        if not found:
            out.append(re.sub(r"(\S)::$", r"\1:", lines[i]))
            i += 1
            continue
        indent = found.group(1)
        if out and out[-1].strip():
            out.append("")
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


class DocstringMarkdown(griffe.Extension):
    """Fences the doctests of every docstring of the loaded packages."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
