"""Registry text in one plain form: old versions' HTML markup and entities, and a looser
key that markup, escapes, bullets and spacing alone never change."""

from __future__ import annotations

import html
import re
from typing import Any, Final

# Old registry versions carry HTML where today's records have plain text with markdown.
_BREAK_TAGS: Final = (
    "p", "div", "blockquote", "pre", "table", "center", "hr", "dl",
    "h1", "h2", "h3", "h4", "h5", "h6",
)  # fmt: skip
_LINE_TAGS: Final = ("br", "tr", "dt", "dd", "caption")
_CELL_TAGS: Final = ("td", "th")
_DROPPED_TAGS: Final = (
    "a", "b", "i", "u", "s", "em", "strong", "span", "font", "sub", "sup", "small", "big",
    "code", "tt", "strike", "del", "ins", "thead", "tbody", "tfoot",
)  # fmt: skip
_TAG_NAMES: Final = (*_BREAK_TAGS, *_LINE_TAGS, *_CELL_TAGS, "ul", "ol", "li", *_DROPPED_TAGS)
# A known tag, bare or with name=value attributes: "age < 18" or "<I or >II" stay text.
_TAG: Final = re.compile(
    r"<(/?)(" + "|".join(sorted(_TAG_NAMES, key=len, reverse=True)) + r")"
    r"(?:\s+[a-z-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'<>]+))*\s*/?>",
    re.IGNORECASE,
)
_ENTITY: Final = re.compile(r"&(?:[a-z][a-z0-9]{1,31}|#[0-9]{1,7}|#x[0-9a-f]{1,6});", re.I)
_SPACES: Final = re.compile(r"\s+")
_BLANK_LINES: Final = re.compile(r"\n{3,}")
_INNER_SPACES: Final = re.compile(r"(?<=\S)[ \t]{2,}")
_BULLET: Final = re.compile(r"^[ \t]*(?:[*+-]|[0-9]{1,3}[.)])[ \t]+", re.MULTILINE)
_ESCAPED: Final = re.compile(r"\\([^\w\s])")  # markdown escapes, and "\≥" alike


def clean_text(text: str) -> str:
    """``text`` in the plain form today's records use: HTML markup and entities converted.

    Only text holding a known tag or an ``&...;`` entity is touched (so modern text comes back
    unchanged): block tags become paragraph breaks, ``<li>`` a ``* `` bullet (``1. `` in an
    ``<ol>``), ``<br>`` a newline, other known tags are dropped, entities are unescaped and
    whitespace is tidied line by line.
    """
    if "<" not in text and "&" not in text:  # nearly every string: keep this path short
        return text
    if "<" in text and _TAG.search(text) is not None:
        return _tidy(_unescape(_render_html(text)))
    return _unescape(text) if _ENTITY.search(text) is not None else text


# What a NUL character of registry text is stored as (no PostgreSQL text can hold NUL; SQLite
# would): U+FFFD REPLACEMENT CHARACTER, on every backend alike (docs/fields.md).
NUL_REPLACEMENT: Final = "\ufffd"


def without_nul(value: Any) -> Any:
    """``value`` (a parsed JSON value) with every NUL character of its strings, keys included,
    replaced by :data:`NUL_REPLACEMENT`."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT)
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


def text_key(text: str) -> str:
    """A loose comparison key: clean_text, then no backslash escapes, bullets or extra spaces."""
    # Escapes first: "\\* item" and "* item" are the same bullet.
    return " ".join(_BULLET.sub("", _ESCAPED.sub(r"\1", clean_text(text))).split())


def _unescape(text: str) -> str:
    # Only well-formed &...; entities (html.unescape alone would turn "&notice" into "¬ice"),
    # repeatedly: double-encoded text ("&amp;lt;") exists in real records.
    for _ in range(3):
        plain = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
        if plain == text:
            break
        text = plain
    return text


def _render_html(text: str) -> str:
    out: list[str] = []
    lists: list[int] = []  # the open <ul>/<ol>: -1 for a <ul>, else the last <ol> number
    pos = 0
    for match in _TAG.finditer(text):
        _render_text(out, text[pos : match.start()])
        _render_tag(out, lists, match.group(2).lower(), closing=bool(match.group(1)))
        pos = match.end()
    _render_text(out, text[pos:])
    return "".join(out)


def _render_text(out: list[str], segment: str) -> None:
    # HTML: any run of whitespace is one space, except before a line that starts with a bullet:
    # old versions wrapped today's markdown lists ("* item" lines) in <p>, and the list it
    # reads as is the same list.
    text = "\n".join(_SPACES.sub(" ", part) for part in _list_lines(segment))
    if not out or out[-1].endswith(("\n", " ")):
        text = text.lstrip(" ")
    if text:
        out.append(text)


def _list_lines(segment: str) -> list[str]:
    """``segment`` cut before every line that starts with a bullet (escaped or not, as
    :func:`text_key` reads it); the pieces keep their other newlines."""
    pieces = segment.split("\n")
    kept = [pieces[0]]
    for line in pieces[1:]:
        if _BULLET.match(_ESCAPED.sub(r"\1", line)):
            kept.append(line)
        else:
            kept[-1] += "\n" + line
    return kept


def _render_tag(out: list[str], lists: list[int], name: str, closing: bool) -> None:
    after_bullet = bool(out) and out[-1].startswith("\n") and out[-1].endswith(" ")
    if name in ("ul", "ol"):
        if closing and lists:
            lists.pop()
        elif not closing:
            lists.append(0 if name == "ol" else -1)
        if not lists or (len(lists) == 1 and not closing):
            out.append("\n\n")
    elif name == "li" and not closing:
        if lists and lists[-1] >= 0:
            lists[-1] += 1
        marker = f"{lists[-1]}. " if lists and lists[-1] > 0 else "* "
        out.append("\n" + "  " * max(len(lists) - 1, 0) + marker)
    elif name in _CELL_TAGS:
        out.append(" ")
    elif after_bullet or name in _DROPPED_TAGS or name == "li":
        return
    elif name in _LINE_TAGS or lists:
        out.append("\n")
    else:
        out.append("\n\n")


def _tidy(text: str) -> str:
    lines = (line.rstrip() for line in text.replace("\xa0", " ").split("\n"))
    return _BLANK_LINES.sub("\n\n", _INNER_SPACES.sub(" ", "\n".join(lines))).strip("\n")
