"""What people read: Markdown and HTML study pages, the pages for people (change browser,
study list, compare, watches), change descriptions, change-class text, the Atom feed and the
SVG timeline.
"""

import importlib
import typing

from mirror.render.class_text import class_label, class_line, class_text
from mirror.render.describe import change_line, change_text, elide, short_value
from mirror.render.timeline_svg import timeline_chart

if typing.TYPE_CHECKING:
    from mirror.render.atom import atom_feed
    from mirror.render.browse import (
        changes_page,
        compare_page,
        error_page,
        studies_page,
        stylesheet,
        watch_view,
        watches_page,
    )
    from mirror.render.pages import render_html, render_markdown

__all__ = [
    "atom_feed",
    "change_line",
    "change_text",
    "changes_page",
    "class_label",
    "class_line",
    "class_text",
    "compare_page",
    "elide",
    "error_page",
    "render_html",
    "render_markdown",
    "short_value",
    "studies_page",
    "stylesheet",
    "timeline_chart",
    "watch_view",
    "watches_page",
]

# The pages (Jinja) and the Atom feed (feedgen) are imported on first use: a change's one-line
# text, all the CLI's feed commands need, does not load them.
_MODULES = {
    "atom_feed": "atom",
    "render_html": "pages",
    "render_markdown": "pages",
    **dict.fromkeys(
        ["changes_page", "compare_page", "error_page", "studies_page", "stylesheet",
         "watch_view", "watches_page"],
        "browse",
    ),
}  # fmt: skip


def __getattr__(name: str) -> typing.Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value
