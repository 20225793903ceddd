"""Markdown (as language models write it) to WhatsApp's own formatting.

WhatsApp knows ``*bold*``, ``_italic_``, ``~strike~`` and little else: Markdown's
``**bold**`` shows as literal asterisks, headings as ``#`` signs, tables as a mess of
pipes, and links as brackets. ``to_whatsapp`` rewrites a model's answer so it reads well
in the chat. It is a pure function: no I/O, no state.

How it avoids mangling text:
- code (fences and inline) and URLs are set aside behind placeholders first, so the
  emphasis rules never touch ``snake_case`` names or ``https://x.com/__init__``;
- bold is turned into a private marker before single-asterisk italics are converted, so
  ``**a**`` never becomes ``_a_`` and the result of one rule is never re-read by another.
"""
from __future__ import annotations

import re

__all__ = ["to_whatsapp"]

# Private-use characters: they cannot appear in model output, so placeholders are unambiguous.
_HOLD_OPEN, _HOLD_CLOSE = "\ue000", "\ue001"
_BOLD = "\ue002"  # stands for WhatsApp's "*" until italics have been converted
_HOLD_PATTERN = re.compile(f"{_HOLD_OPEN}(\\d+){_HOLD_CLOSE}")

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_SETEXT_UNDERLINE = re.compile(r"^\s{0,3}(={2,}|-{2,})\s*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")

_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!~|>])")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_BARE_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"]")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

_BOLD_ITALIC = re.compile(r"(?<![*\w])\*\*\*(?=\S)(.+?)(?<=\S)\*\*\*(?![*\w])")
_BOLD_STARS = re.compile(r"(?<![*\w])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![*\w])")
_BOLD_UNDERSCORES = re.compile(r"(?<![_\w])__(?=\S)(.+?)(?<=\S)__(?![_\w])")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")
_STRIKE = re.compile(r"(?<!~)~~(?=\S)(.+?)(?<=\S)~~(?!~)")
_BLANK_RUNS = re.compile(r"\n{3,}")


def to_whatsapp(markdown: str | None) -> str:
    """Rewrite Markdown as WhatsApp text; see the module docstring for the rules."""
    if not markdown:
        return ""
    held: list[str] = []
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")
    text = _HTML_BREAK.sub("\n", text)
    lines = _convert_blocks(text.split("\n"), held)
    text = "\n".join(line.rstrip() for line in lines)
    text = _BLANK_RUNS.sub("\n\n", text).strip()
    return _restore(text, held)


# ---- blocks ---------------------------------------------------------------------------

def _convert_blocks(lines: list[str], held: list[str]) -> list[str]:
    """Walk the lines once: code fences and tables are blocks; every other line stands alone."""
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            body, index = _take_fence(lines, index, fence.group(1))
            out.extend(_hold(held, code_line) for code_line in body)
            continue
        if _starts_table(lines, index):
            rows, index = _take_table(lines, index)
            out.extend(_table_row(cells, held) for cells in rows)
            continue
        if _is_setext_heading(lines, index):
            out.append(_convert_line("# " + line.strip(), held))
            index += 2
            continue
        out.append(_convert_line(line, held))
        index += 1
    return out


def _take_fence(lines: list[str], start: int, marker: str) -> tuple[list[str], int]:
    """The lines inside a fenced code block and the index after it (an unclosed fence runs to the end)."""
    body: list[str] = []
    index = start + 1
    closing = re.compile(rf"^\s*{re.escape(marker[0])}{{{len(marker)},}}\s*$")
    while index < len(lines):
        if closing.match(lines[index]):
            return body, index + 1
        body.append(lines[index])
        index += 1
    return body, index


def _starts_table(lines: list[str], index: int) -> bool:
    return (
        "|" in lines[index]
        and index + 1 < len(lines)
        and "|" in lines[index + 1]
        and bool(_TABLE_SEPARATOR.match(lines[index + 1]))
    )


def _is_setext_heading(lines: list[str], index: int) -> bool:
    """``Title`` over a line of ``===`` or ``---`` is a heading in Markdown, not a rule."""
    line = lines[index]
    return (
        index + 1 < len(lines)
        and bool(line.strip())
        and not (_BULLET.match(line) or _HEADING.match(line) or _RULE.match(line) or _FENCE.match(line))
        and bool(_SETEXT_UNDERLINE.match(lines[index + 1]))
    )


def _take_table(lines: list[str], start: int) -> tuple[list[list[str]], int]:
    rows = [_cells(lines[start])]
    index = start + 2  # skip the |---|---| separator
    while index < len(lines) and "|" in lines[index] and lines[index].strip():
        rows.append(_cells(lines[index]))
        index += 1
    return rows, index


def _cells(line: str) -> list[str]:
    stripped = line.strip()
    if stripped.startswith("|"):
        stripped = stripped[1:]
    if stripped.endswith("|") and not stripped.endswith("\\|"):
        stripped = stripped[:-1]
    cells = re.split(r"(?<!\\)\|", stripped)
    return [cell.replace("\\|", "|").strip() for cell in cells]


def _table_row(cells: list[str], held: list[str]) -> str:
    return " — ".join(_convert_inline(cell, held) for cell in cells if cell)


def _convert_line(line: str, held: list[str]) -> str:
    if _RULE.match(line):
        return ""
    heading = _HEADING.match(line)
    if heading:
        title = _strip_emphasis(_convert_inline(heading.group(1), held))
        return f"{_BOLD}{title}{_BOLD}" if title else ""
    bullet = _BULLET.match(line)
    if bullet:
        indent = bullet.group(1).replace("\t", "  ")
        return f"{indent}• {_convert_inline(bullet.group(2), held)}"
    return _convert_inline(line, held)


# ---- inline ---------------------------------------------------------------------------

def _convert_inline(text: str, held: list[str]) -> str:
    text = _ESCAPED.sub(lambda m: _hold(held, m.group(1)), text)
    text = _INLINE_CODE.sub(lambda m: _hold(held, m.group(2).strip()), text)
    text = _IMAGE.sub(lambda m: _hold(held, m.group(2)), text)
    text = _LINK.sub(lambda m: _link(m.group(1), m.group(2), held), text)
    text = _AUTOLINK.sub(lambda m: _hold(held, m.group(1).removeprefix("mailto:")), text)
    text = _BARE_URL.sub(lambda m: _hold(held, m.group(0)), text)
    text = _BOLD_ITALIC.sub(lambda m: f"{_BOLD}_{m.group(1)}_{_BOLD}", text)
    text = _BOLD_STARS.sub(lambda m: f"{_BOLD}{m.group(1)}{_BOLD}", text)
    text = _BOLD_UNDERSCORES.sub(lambda m: f"{_BOLD}{m.group(1)}{_BOLD}", text)
    text = _ITALIC_STAR.sub(lambda m: f"_{m.group(1)}_", text)
    return _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)


def _link(label: str, url: str, held: list[str]) -> str:
    """``[text](url)`` -> ``text: url``; a label that merely repeats the URL is dropped."""
    target = url.removeprefix("mailto:")
    label = label.strip()
    if not label or label.rstrip("/") in (target.rstrip("/"), url.rstrip("/")):
        return _hold(held, target)
    return f"{label}: {_hold(held, target)}"


def _strip_emphasis(text: str) -> str:
    """A heading becomes one bold line; emphasis inside it would break the outer markers."""
    return text.replace(_BOLD, "").strip()


# ---- placeholders -----------------------------------------------------------------------

def _hold(held: list[str], literal: str) -> str:
    held.append(literal)
    return f"{_HOLD_OPEN}{len(held) - 1}{_HOLD_CLOSE}"


def _restore(text: str, held: list[str]) -> str:
    text = text.replace(_BOLD, "*")
    # Held text may itself hold placeholders (a link label's code span): resolve until stable.
    for _ in range(3):
        if _HOLD_OPEN not in text:
            break
        text = _HOLD_PATTERN.sub(lambda m: held[int(m.group(1))], text)
    return text


def truncate(text: str | None, limit: int) -> str:
    """``text`` stripped, cut to ``limit`` characters with an ellipsis when longer."""
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
