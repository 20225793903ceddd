"""Text for the voice: a chat answer made into something a voice can say.

``prepare_for_speech`` turns a chat answer (Markdown, emoji, links) into plain sentences
(a link becomes ``LINK_PHRASE``: the link itself goes as text); ``split_for_speech`` keeps
the spoken part of a long answer short and returns the rest to be sent as text.
``split_answer_for_speech`` cuts the written answer itself, so the unspoken rest is sent as
written (links intact), and ``text_after_voice`` is the text that follows a voice note: the
links, e-mail addresses and phone numbers of the spoken part (``written_only``), then the rest.
"""
from __future__ import annotations

import re

LINK_PHRASE = "o link que te enviei por escrito"

_CODE_BLOCK = re.compile(r"```.*?```", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>()\[\]]+[^\s<>()\[\].,;:!?\"']", re.I)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.M)
_BULLET = re.compile(r"^\s*(?:[-*+•◦▪]|\d+[.)])\s+", re.M)
_QUOTE = re.compile(r"^\s*>\s?", re.M)
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.M)
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC_UNDERSCORE = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"~~(.+?)~~", re.S)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_TABLE_PIPE = re.compile(r"\s*\|\s*")
_EMOJI = re.compile(
    "["
    "\U0001F000-\U0001FAFF"  # pictographs, emoticons, transport, symbols & pictographs ext.
    "\U0001F1E6-\U0001F1FF"  # regional indicators (flags)
    "\u2600-\u27BF"  # misc symbols, dingbats
    "\u2B00-\u2BFF"  # stars, arrows
    "\u2300-\u23FF"  # watch, hourglass, media controls
    "\u2190-\u21FF"  # arrows
    "\uFE0E\uFE0F\u200D\u20E3"  # variation selectors, zero-width joiner, keycap
    "\U000E0020-\U000E007F"  # tag characters (subdivision flags)
    "]+"
)
_SENTENCE_END = re.compile(r"[.!?…:;]$")


def _strip_markdown(text: str) -> str:
    text = _CODE_BLOCK.sub(" ", text)
    text = _IMAGE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: LINK_PHRASE if _URL.fullmatch(m.group(1).strip()) else m.group(1), text)
    text = _RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    text = _BOLD.sub(lambda m: m.group(2), text)
    text = _STRIKE.sub(lambda m: m.group(1), text)
    text = _ITALIC_STAR.sub(lambda m: m.group(1), text)
    text = _ITALIC_UNDERSCORE.sub(lambda m: m.group(1), text)
    text = _INLINE_CODE.sub(lambda m: m.group(1), text)
    return text


def _replace_urls(text: str) -> str:
    text = _URL.sub(LINK_PHRASE, text)
    # "veja <url> ou <url>" would say the phrase twice in a row.
    repeated = re.compile(rf"({re.escape(LINK_PHRASE)})(?:\s*(?:,|e|ou)?\s*{re.escape(LINK_PHRASE)})+")
    text = repeated.sub(r"\1", text)
    # Portuguese contracts a preposition with the article: "em o link" -> "no link".
    return _CONTRACTION.sub(_contract, text)


_CONTRACTIONS = {"em": "no", "de": "do", "a": "ao", "por": "pelo"}
_CONTRACTION = re.compile(r"\b(em|de|a|por) o(?= link que te enviei)", re.I)


def _contract(match: re.Match) -> str:
    contracted = _CONTRACTIONS[match.group(1).lower()]
    return contracted.capitalize() if match.group(1)[0].isupper() else contracted


def _join_lines(text: str) -> str:
    """Join lines into flowing speech; a line without final punctuation (a heading, a list
    item) gets a period so the voice pauses there instead of running items together."""
    spoken = []
    for line in text.splitlines():
        line = _TABLE_PIPE.sub(", ", line).strip(" ,")
        if not line:
            continue
        spoken.append(line if _SENTENCE_END.search(line) else line + ".")
    return " ".join(spoken)


def prepare_for_speech(text: str) -> str:
    """A chat answer made sayable: no Markdown, no emoji, links replaced by a phrase, tidy spaces."""
    if not text:
        return ""
    text = _strip_markdown(text)
    text = _replace_urls(text)
    text = _EMOJI.sub("", text)
    text = _join_lines(text)
    text = re.sub(r"[ \t\u00A0]+", " ", text)
    text = re.sub(r"\s+([.,!?;:…])", r"\1", text)
    text = re.sub(r"([.!?])\.+", r"\1", text)  # "Olá!." after joining lines
    return text.strip()


_SENTENCE_BREAK = re.compile(r"(?:[.!?…]+[\"')\]]*\s+)|(?:\n\s*\n)")
_CLAUSE_BREAK = re.compile(r"[,;:]\s+|\n")


def split_for_speech(text: str, max_chars: int) -> tuple[str, str]:
    """(spoken part, rest) with the spoken part at most ``max_chars`` long, cut at the last
    sentence boundary that fits (else a clause, else a word). Long answers: speak the first
    part, send the rest as text."""
    text = text.strip()
    if len(text) <= max_chars:
        return text, ""
    window = text[: max_chars + 1]
    cut = _last_break(_SENTENCE_BREAK, window, minimum=max_chars // 3)
    if cut is None:
        cut = _last_break(_CLAUSE_BREAK, window, minimum=max_chars // 3)
    if cut is None:
        space = window.rfind(" ")
        cut = space if space > 0 else max_chars
    return text[:cut].strip(), text[cut:].strip()


def _last_break(pattern: re.Pattern, window: str, minimum: int) -> int | None:
    """End of the last ``pattern`` match in ``window`` past ``minimum`` (a tiny first part
    would make an odd voice note), or None."""
    ends = [m.end() for m in pattern.finditer(window) if m.end() > minimum]
    return ends[-1] if ends else None


# ---- what must also go in writing ---------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}(?![\w-])")
# A phone number as people write it: optional +country code, optional area code (with or without
# parentheses), then 8 or 9 digits in groups: "(11) 98765-4321", "+55 11 3456-7890", "0800 123 4567".
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])?\d{4,5}[\s.-]?\d{4}(?![\w-])"
)
_CONTACT_END = ".,;:!?)\"'"


def written_only(text: str) -> list[str]:
    """Links, e-mail addresses and phone numbers in ``text``, in order, each once: what a
    listener cannot click or copy from a voice note."""
    found: list[tuple[int, str]] = []
    rest = text or ""
    for pattern in (_URL, _EMAIL):
        for match in pattern.finditer(rest):
            found.append((match.start(), match.group(0).rstrip(_CONTACT_END)))
        rest = pattern.sub(lambda m: " " * len(m.group(0)), rest)  # a number inside a link is the link's
    for match in _PHONE.finditer(rest):
        if sum(ch.isdigit() for ch in match.group(0)) >= 8:
            found.append((match.start(), match.group(0).strip()))
    seen: list[str] = []
    for _, item in sorted(found):
        if item not in seen:
            seen.append(item)
    return seen


def split_answer_for_speech(answer: str, max_chars: int) -> tuple[str, str]:
    """(speech for the first part of ``answer``, the rest of ``answer`` as written).

    The written answer is cut at the last sentence or paragraph end whose speech fits in
    ``max_chars``; the rest keeps its links and formatting. When no such cut exists (one
    endless sentence), the speech itself is cut (``split_for_speech``) and the rest is speech.
    """
    spoken = prepare_for_speech(answer)
    if len(spoken) <= max_chars:
        return spoken, ""
    best = None
    for match in _SENTENCE_BREAK.finditer(answer):
        head = prepare_for_speech(answer[: match.end()])
        if len(head) > max_chars:
            break
        if len(head) > max_chars // 3:
            best = match.end()
    if best is None:
        return split_for_speech(spoken, max_chars)
    return prepare_for_speech(answer[:best]), answer[best:].strip()


def text_after_voice(answer: str, rest: str) -> str | None:
    """The text that follows a voice note: the links, e-mails and phone numbers of the spoken
    part (the voice only says they were sent in writing), then the unspoken rest; None if neither."""
    rest = (rest or "").strip()
    contacts = [item for item in written_only(answer) if item not in rest]
    parts = ["\n".join(contacts)] if contacts else []
    if rest:
        parts.append(rest)
    return "\n\n".join(parts) or None
