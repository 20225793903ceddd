"""Text prepared for speech (app/assistant/speech_text.py): Markdown, links and emoji removed;
the split at the voice model's character limit."""
from __future__ import annotations

import pytest

from app.assistant.speech_text import LINK_PHRASE, prepare_for_speech, split_for_speech


@pytest.mark.parametrize("text, spoken", [
    ("**Olá!** Tudo _bem_?", "Olá! Tudo bem?"),
    ("## Serviços\n\n- Sites\n- Tráfego pago", "Serviços. Sites. Tráfego pago."),
    ("1. Primeiro passo\n2. Segundo passo", "Primeiro passo. Segundo passo."),
    ("Veja [nosso portfólio](https://endrigo.digital/p).", "Veja nosso portfólio."),
    ("Agende em https://endrigo.digital/agenda?x=1.", f"Agende no {LINK_PHRASE[2:]}."),
    ("Acesse https://a.com ou https://b.com!", f"Acesse {LINK_PHRASE}!"),
    ("[https://a.com](https://a.com)", f"{LINK_PHRASE}."),
    ("Vamos nessa 🚀🔥 👍🏽 ✅", "Vamos nessa."),
    ("Bandeira 🇧🇷 e família 👨‍👩‍👧", "Bandeira e família."),
    ("Use o código `PROMO10`", "Use o código PROMO10."),
    ("variavel_com_sublinhado fica", "variavel_com_sublinhado fica."),
    ("Linha   com    espaços\t demais.", "Linha com espaços demais."),
    ("```python\nprint('x')\n```\nPronto.", "Pronto."),
    ("", ""),
])
def test_prepare_for_speech(text, spoken):
    assert prepare_for_speech(text) == spoken


def test_split_short_text_is_spoken_whole():
    assert split_for_speech("Tudo certo.", 100) == ("Tudo certo.", "")


def test_split_at_a_sentence_boundary():
    text = "Primeira frase aqui. Segunda frase, um pouco maior! Terceira frase que não cabe no limite."
    spoken, rest = split_for_speech(text, 60)
    assert spoken == "Primeira frase aqui. Segunda frase, um pouco maior!"
    assert rest == "Terceira frase que não cabe no limite."


def test_split_falls_back_to_a_clause_then_a_word():
    spoken, rest = split_for_speech("Uma frase muito longa, com vírgulas, que passa do limite sem ponto final", 45)
    assert spoken == "Uma frase muito longa, com vírgulas," and rest.startswith("que passa")
    spoken, rest = split_for_speech("palavra " * 20, 30)
    assert len(spoken) <= 30 and not spoken.endswith(" ") and (spoken + " " + rest).split() == ["palavra"] * 20


def test_split_never_exceeds_the_limit_and_loses_nothing():
    text = " ".join(f"Frase número {i} do texto longo." for i in range(200))
    spoken, rest = split_for_speech(text, 900)
    assert len(spoken) <= 900 and spoken.endswith(".")
    assert f"{spoken} {rest}" == text
