"""WhatsApp formatting shown as WhatsApp shows it: the ``whatsapp`` Jinja filter.

Messages carry WhatsApp's own markers (``*bold*``, ``_italic_``, ``~strike~``,
```` ```mono``` ````). ``whatsapp_html`` escapes the whole text FIRST and only then turns
the markers into ``<strong>``, ``<em>``, ``<s>`` and ``<code>``: whatever a user or the
model wrote stays text, inside the formatting too (``*<script>*`` is bold text, not a
script). Monospace and links are set aside before the other markers, so ``snake_case`` and
``https://x.com/_a_`` stay as written. Line breaks are left to the page's CSS
(``white-space: pre-wrap`` on message bubbles).
"""
from __future__ import annotations

import re

from markupsafe import Markup, escape

from app.web.dashboard.blueprint import bp

_HOLD = "\ue000{}\ue001"
_HELD = re.compile("\ue000(\\d+)\ue001")
_MONO = re.compile(r"```(.+?)```", re.S)
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.I)
# A marker opens after a non-word character and closes before one, with no space inside its
# edges, on one line: how WhatsApp reads them ("2*3*4" and "a_b_c" are not formatting).
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")


def whatsapp_html(text: str | None) -> Markup:
    """``text`` escaped, then its WhatsApp markers as HTML tags (safe to put in a page)."""
    if not text:
        return Markup("")
    held: list[str] = []

    def hold(html: str) -> str:
        held.append(html)
        return _HOLD.format(len(held) - 1)

    html = str(escape(text)).replace("\ue000", "").replace("\ue001", "")
    html = _MONO.sub(lambda m: hold(f'<code class="wa-mono">{m.group(1)}</code>'), html)
    html = _URL.sub(lambda m: hold(m.group(0)), html)
    html = _BOLD.sub(r"<strong>\1</strong>", html)
    html = _ITALIC.sub(r"<em>\1</em>", html)
    html = _STRIKE.sub(r"<s>\1</s>", html)
    for _ in range(2):  # a link inside monospace is held inside a held part
        html = _HELD.sub(lambda m: held[int(m.group(1))], html)
    return Markup(html)


@bp.app_template_filter("whatsapp")
def _whatsapp_filter(value: str | None) -> Markup:
    return whatsapp_html(value)
