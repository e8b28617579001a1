"""A griffe extension: ccg's docstrings are plain text, so escape what Markdown would misread.

ccg writes averages as `<U>_z` and `<U_term>_z`; Markdown takes `<U>` for an HTML tag (an
underline that runs to the end of the paragraph). And shapes follow expressions, as in
`E_q[u + log q] [M]`, which Markdown reads as a reference link `[text] [id]`. This extension
escapes a `<` that starts a tag-like word as `&lt;`, and a `[` right after `]` (one space
allowed) as `\\[`, in every docstring, outside code spans and indented code blocks, so the
reference shows the text as written. `docs/hooks.py` applies the same escape to the attribute
docstrings on the configuration page.
"""

from __future__ import annotations

import re

import griffe

TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
REFERENCE = re.compile(r"(?<=\])(\s?)\[")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def _escape(text: str) -> str:
    return REFERENCE.sub(r"\1\\[", TAG_START.sub("&lt;", text))


def escape_line(line: str) -> str:
    """Escape tag-like `<` and reference-like `] [` in one line, leaving `code spans` alone."""
    out, last = [], 0
    for match in CODE_SPAN.finditer(line):
        out.append(_escape(line[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_escape(line[last:]))
    return "".join(out)


def escape_text(text: str) -> str:
    """Escape a docstring (`escape_line`), except in code spans and indented code blocks.

    A code block is a run of lines indented by 4 or more spaces that starts after a blank line
    (Google-style section items follow their "Args:" line directly, so they are text).
    """
    lines = text.split("\n")
    out = []
    previous_blank, in_block = True, False
    for line in lines:
        blank = not line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if not blank:
            in_block = indent >= 4 and (previous_blank or in_block)
        out.append(line if in_block or blank else escape_line(line))
        previous_blank = blank
    return "\n".join(out)


class PlainTextDocstrings(griffe.Extension):
    """Escape tag-like `<` in every docstring of the loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = escape_text(obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
