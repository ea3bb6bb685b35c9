"""What people read: Markdown and HTML study pages, the pages for people (change browser,
study list, compare, watches), change descriptions, change-class text, the
Atom feed and the SVG timeline.
"""

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
from mirror.render.class_text import class_label, class_line, class_text
from mirror.render.describe import change_line, change_text, elide, short_value
from mirror.render.pages import render_html, render_markdown
from mirror.render.timeline_svg import timeline_chart

__all__ = [
    "atom_feed",
    "changes_page",
    "compare_page",
    "error_page",
    "studies_page",
    "stylesheet",
    "watch_view",
    "watches_page",
    "change_line",
    "change_text",
    "class_label",
    "class_line",
    "class_text",
    "elide",
    "render_html",
    "render_markdown",
    "short_value",
    "timeline_chart",
]
