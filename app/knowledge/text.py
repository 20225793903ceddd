"""Text folding and the tiny Portuguese-aware tokenizer for BM25; distinctive terms for the
transcription prompt; Markdown reflow (hard-wrapped paragraphs joined into one line)."""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Iterable


def fold(text: str) -> str:
    """Lower case without accents: "Serviços" -> "servicos" (users often type without accents).

    Decompose, then keep ASCII: the accents go, and so would other non-ASCII letters, which
    the tokenizer ignores anyway. (Much faster than filtering characters one by one.)
    """
    return unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")


# Function words and greetings, accent-free; they match everything and mean nothing here.
PORTUGUESE_STOPWORDS = frozenset("""
a o as os um uma uns umas de do da dos das em no na nos nas num numa por pelo pela pelos pelas
para pra pro com sem e ou que se ao aos mas nem como quando onde qual quais quanto quanta
quantos quantas quem cujo eu tu ele ela eles elas voce voces nos vos me te lhe lhes meu minha
meus minhas teu tua seu sua seus suas nosso nossa nossos nossas isso isto aquilo esse essa esses
essas este esta estes estas aquele aquela aqueles aquelas ser sou e era eram foi foram sao estar
estou esta estao estava ter tem tenho tinha ha havia ja nao sim so tambem muito muita muitos
muitas mais menos ate sobre entre apos antes depois ainda entao todo toda todos todas cada
outro outra outros outras mesmo mesma algum alguma alguns algumas nenhum nenhuma
oi ola obrigado obrigada por favor valeu beleza tudo porque pois comigo the of and to
""".split())

_TOKEN = re.compile(r"[a-z0-9]+")
# Plural endings, checked in order: "automações" -> "automacao", "digitais" -> "digital",
# "mensagens" -> "mensagem", "valores" -> "valor"; otherwise a final "s" is dropped.
_PLURALS = (("oes", "ao"), ("ais", "al"), ("eis", "el"), ("ns", "m"), ("res", "r"), ("zes", "z"))


def _singular(word: str) -> str:
    """Reduce a Portuguese plural so "serviços" finds "serviço" (a light RSLP-style step)."""
    if len(word) <= 3 or not word.endswith("s"):
        return word
    for suffix, replacement in _PLURALS:
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + replacement
    if word.endswith(("ss", "us", "is")):  # singular already: "bônus", "lápis", "tênis"
        return word
    return word[:-1]


# What Brazilians abbreviate when they type on WhatsApp (folded): expanded before the stopword
# filter, so "vcs" goes like "vocês" and "zap" finds "WhatsApp". General internet Portuguese,
# not words of this knowledge base.
ABBREVIATIONS = {
    "vc": "voce", "vcs": "voces", "q": "que", "oq": "o que", "pq": "porque", "tb": "tambem", "tbm": "tambem",
    "hj": "hoje", "qndo": "quando", "qdo": "quando", "qto": "quanto", "qnto": "quanto", "qt": "quanto",
    "qts": "quantos", "cmg": "comigo", "td": "tudo", "tds": "todos", "mto": "muito", "mt": "muito",
    "msg": "mensagem", "msgs": "mensagens", "zap": "whatsapp", "zapzap": "whatsapp", "wpp": "whatsapp",
    "whats": "whatsapp", "insta": "instagram", "face": "facebook", "fb": "facebook", "pf": "por favor",
    "pfv": "por favor", "pfvr": "por favor", "obg": "obrigado", "vlw": "valeu", "ctt": "contato",
    "tel": "telefone", "cel": "celular", "info": "informacao", "infos": "informacoes", "n": "nao",
    "eh": "e", "to": "estou", "ta": "esta", "agr": "agora", "dps": "depois", "blz": "beleza",
}


def _expand(words: list[str]) -> list[str]:
    return [part for word in words for part in ABBREVIATIONS.get(word, word).split()]


def tokenize(text: str) -> list[str]:
    """BM25 tokens: folded words, WhatsApp abbreviations expanded, stopwords dropped, plurals reduced.

    Deliberately no verb stemming: a light suffix stripper ("atendem" -> "atend") lowered hit@1
    on the question set (see docs/PERFORMANCE.md), conflating "pago" with "pages" and "atendem"
    with the ubiquitous "atendimento".
    """
    return [_singular(word) for word in _expand(_TOKEN.findall(fold(text))) if word not in PORTUGUESE_STOPWORDS]


_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Shorter words have too many neighbours one typo away ("caro", "cara", "carro") to guess.
MIN_TYPO_LENGTH = 5


def one_typo_away(word: str) -> set[str]:
    """Every string one deletion, transposition, substitution or insertion away from ``word``
    (about 54 x len candidates: microseconds to check against a vocabulary)."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    transposes = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in _LETTERS if c != b[0]}
    inserts = {a + c + b for a, b in splits for c in _LETTERS}
    return deletes | transposes | replaces | inserts


_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_SENTENCES = re.compile(r"(?<=[.!?:])\s+|\n+")
_CLAUSES = re.compile(r"[,;()\[\]\"“”/>]|\s[-–—]\s")


def _capitalised(word: str) -> bool:
    return (word[0].isupper() or any(ch.isupper() for ch in word[1:])) and fold(word) not in PORTUGUESE_STOPWORDS


def _always_a_name(word: str) -> bool:
    """Mixed case (WhatsApp, LinkedIn) or an acronym (CRM): a name wherever it stands."""
    mixed = any(ch.isupper() for ch in word[1:]) and any(ch.islower() for ch in word)
    return mixed or (len(word) >= 2 and word.isupper())


def _name_runs(clause: str, sentence_start: bool) -> Iterable[str]:
    """Runs of capitalised words in a clause ("Google Ads"); a lone capitalised word opening a
    sentence is only grammar ("Depois vem ...") and is skipped."""
    words = _WORD.findall(clause)
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and _capitalised(words[j]):
            j += 1
        if j == i:
            i += 1
            continue
        run = words[i:j]
        if not (sentence_start and i == 0 and len(run) == 1 and not _always_a_name(run[0])):
            yield " ".join(run)
        i = j


def distinctive_terms(texts: Iterable[str], limit: int = 50) -> list[str]:
    """Names a transcriber could get wrong ("Endrigo Digital", "Google Ads", "WhatsApp"),
    most frequent first."""
    counts: Counter[str] = Counter()
    for text in texts:
        for sentence in _SENTENCES.split(text):
            for n, clause in enumerate(_CLAUSES.split(sentence)):
                counts.update(_name_runs(clause, sentence_start=n == 0))
    return [term for term, _ in counts.most_common(limit)]


# ---- Markdown reflow ---------------------------------------------------------------------------
# Sources are hard-wrapped at ~90 columns; those line breaks are layout, not meaning, and would
# otherwise reach the chunks, the prompts and the replies (WhatsApp shows every "\n").

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*$")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(\s|$)")
_LIST_ITEM = re.compile(r"^(\s*)([-*+]|\d{1,9}[.)])(\s+|$)")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")
_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)+\|?\s*$")
_QUOTE = re.compile(r"^ {0,3}> ?")


def _hard_break(line: str) -> bool:
    """Markdown's explicit line break (two trailing spaces or a backslash) is kept as a break."""
    return line.endswith("  ") or line.endswith("\\")


def _is_table_row(lines: list[str], i: int) -> bool:
    """A pipe-led row, or the header row right above a delimiter row (tables without outer pipes)."""
    line = lines[i]
    if line.lstrip().startswith("|") or _TABLE_DELIMITER.match(line):
        return True
    return "|" in line and i + 1 < len(lines) and bool(_TABLE_DELIMITER.match(lines[i + 1]))


def _starts_block(lines: list[str], i: int, *, in_paragraph: bool = False) -> bool:
    """Whether line ``i`` opens something a paragraph or list item must not swallow.

    As in CommonMark, only a bullet or an ordered item numbered 1 interrupts a paragraph: a
    wrapped sentence may well continue on a line that starts with "2026. ".
    """
    line = lines[i]
    item = _LIST_ITEM.match(line)
    if item and in_paragraph and item.group(2)[0].isdigit() and item.group(2)[:-1] != "1":
        item = None
    return bool(not line.strip() or _FENCE_OPEN.match(line) or _ATX_HEADING.match(line)
                or _THEMATIC_BREAK.match(line) or item or _QUOTE.match(line)
                or _is_table_row(lines, i))


def _join(parts: list[str]) -> str:
    """Join the lines of one paragraph or list item: one space between them, explicit breaks kept."""
    out = ""
    for n, part in enumerate(parts):
        text = part.strip()
        if n == 0:
            out = part.rstrip()
        elif _hard_break(parts[n - 1]):
            out += "\n" + text
        else:
            out += " " + text
        if out.endswith("\\") and n < len(parts) - 1:
            out = out[:-1].rstrip()  # the backslash only marked the break
    return out


def reflow_markdown(text: str) -> str:
    """Join hard-wrapped lines of Markdown paragraphs into one line each.

    List items stay one per line (continuation lines joined to their item, nested items keep
    their indentation); headings, tables, code blocks (fenced, or indented after a blank line
    outside a list) and thematic breaks are kept line for line; block quotes are reflowed
    inside their "> " prefix; blank lines between blocks are kept, runs of them become one.
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    in_list = False  # an indented line right after a list (even past a blank) continues it
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            if out and out[-1] != "":
                out.append("")
            i += 1
            continue
        fence = _FENCE_OPEN.match(line)
        if fence:
            marker = fence.group(1)
            out.append(line)
            i += 1
            while i < len(lines):  # verbatim up to the closing fence (or the end of the text)
                out.append(lines[i])
                i += 1
                close = _FENCE_CLOSE.match(out[-1])
                if close and close.group(1)[0] == marker[0] and len(close.group(1)) >= len(marker):
                    break
            in_list = False
            continue
        if _ATX_HEADING.match(line) or _THEMATIC_BREAK.match(line):
            out.append(line.rstrip())
            i += 1
            in_list = False
            continue
        if _is_table_row(lines, i):
            while i < len(lines) and lines[i].strip() and _is_table_row(lines, i):
                out.append(lines[i].rstrip())
                i += 1
            in_list = False
            continue
        if _QUOTE.match(line):
            quoted = []
            while i < len(lines) and lines[i].strip() and _QUOTE.match(lines[i]):
                quoted.append(_QUOTE.sub("", lines[i], count=1))
                i += 1
            out.extend(f"> {q}".rstrip() for q in reflow_markdown("\n".join(quoted)).split("\n"))
            in_list = False
            continue
        if (line.startswith("    ") or line.startswith("\t")) and not in_list and (not out or out[-1] == ""):
            while i < len(lines) and (lines[i].startswith(("    ", "\t")) or not lines[i].strip()):
                out.append(lines[i].rstrip())
                i += 1
            blank_after = False
            while out and out[-1] == "":  # blank lines after the block: one separator, as elsewhere
                out.pop()
                blank_after = True
            if blank_after:
                out.append("")
            continue
        item = _LIST_ITEM.match(line)
        if item or (in_list and line[:1].isspace()):
            parts = [line]
            i += 1
            while i < len(lines) and not _starts_block(lines, i):
                parts.append(lines[i])
                i += 1
            if not item:  # a paragraph inside the previous item: keep its indentation
                parts[0] = line.rstrip()
            out.append(_join(parts))
            in_list = True
            continue
        parts = [line]
        i += 1
        while (i < len(lines) and not _starts_block(lines, i, in_paragraph=True)
               and not _SETEXT_UNDERLINE.match(lines[i])):
            parts.append(lines[i])
            i += 1
        out.append(_join(parts).strip())
        if i < len(lines) and _SETEXT_UNDERLINE.match(lines[i]):
            out.append(lines[i].rstrip())
            i += 1
        in_list = False
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out)
