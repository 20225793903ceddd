"""The Twilio outbound channel (app/channels/twilio/outbound.py): a reply split into parts
of at most 1,600 characters."""
from __future__ import annotations

from app.channels.twilio.outbound import split_message


def test_split_prefers_paragraphs_then_sentences_then_words():
    paragraph = "Frase curta número um. " * 40  # ~920 chars
    parts = split_message(paragraph + "\n\n" + paragraph + "\n\n" + paragraph)
    assert len(parts) == 3 and all(p.strip() == paragraph.strip() for p in parts)
    one_long_paragraph = "Esta é uma frase que termina aqui. " * 100  # 3,500 chars, no blank lines
    parts = split_message(one_long_paragraph)
    assert all(len(p) <= 1600 for p in parts) and all(p.endswith(".") for p in parts)
    assert " ".join(parts) == one_long_paragraph.strip()
    no_punctuation = "palavra " * 600
    parts = split_message(no_punctuation)
    assert all(len(p) <= 1600 for p in parts) and " ".join(parts) == no_punctuation.strip()
    assert split_message("") == [] and split_message("oi") == ["oi"]
    assert all(len(p) <= 1600 for p in split_message("x" * 5000))
