"""Text folding and the tiny Portuguese-aware tokenizer for BM25; distinctive terms for the transcription prompt."""
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
oi ola obrigado obrigada por favor the of and to
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


def tokenize(text: str) -> list[str]:
    """BM25 tokens: folded words, stopwords dropped, plurals reduced."""
    return [_singular(word) for word in _TOKEN.findall(fold(text)) if word not in PORTUGUESE_STOPWORDS]


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
