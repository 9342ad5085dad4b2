"""A griffe extension for the API pages: the package's docstrings are reStructuredText-flavoured prose, the site
renders Markdown. It rewrites, on the loaded copy only (the source is not touched):

- roles ``:func:`x```, ``:meth:``, ``:class:``, ``:attr:``, ``:mod:``, ``:data:``, ``:exc:`` to the code span ``x``;
- a paragraph ending in ``::`` followed by an indented block to ``:`` and a fenced code block (Python when the
  block looks like code, plain text otherwise).

mkdocs.yml loads it with ``extensions: [scripts/griffe_docstrings.py]`` (a path from the repository root).
"""

from __future__ import annotations

import re
import textwrap

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|attr|mod|data|exc|obj):`~?([^`]+)`")
PYTHON_HINT = re.compile(r"^\s*(?:@|def |class |import |from |return |with |for |if |print\(|\w+(?:\.\w+)*\s*=|\w+\()")


def markdown_docstring(value: str) -> str:
    value = ROLE.sub(r"`\1`", value)
    lines = value.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and line.strip() != "::":
            out.append(line.rstrip()[:-1])  # "Example::" -> "Example:"
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            indent = len(line) - len(line.lstrip())
            block = []
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            if block:
                body = textwrap.dedent("\n".join(block))
                lang = "python" if any(PYTHON_HINT.match(b) for b in body.splitlines()) else "text"
                out += ["", f"```{lang}", *body.splitlines(), "```", ""]
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class MarkdownDocstrings(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
