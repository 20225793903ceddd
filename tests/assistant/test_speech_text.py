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


def test_written_only_finds_links_emails_and_phones_once_in_order():
    from app.assistant.speech_text import written_only

    text = ("Site: https://endrigo.example/a?b=1. E-mail: Contato.Equipe@endrigo.example, telefone (11) 98765-4321 "
            "ou +55 11 3456-7890; de novo https://endrigo.example/a?b=1 e https://wa.me/5511987654321. "
            "Preço: R$ 1.500,00 em 2026, CEP 01310-100.")
    assert written_only(text) == ["https://endrigo.example/a?b=1", "Contato.Equipe@endrigo.example",
                                  "(11) 98765-4321", "+55 11 3456-7890", "https://wa.me/5511987654321"]
    assert written_only("Sem nada para copiar aqui.") == []


def test_split_answer_for_speech_keeps_the_written_rest():
    from app.assistant.speech_text import split_answer_for_speech, text_after_voice

    answer = "Primeiro veja **isto**. " * 20 + "Depois abra https://endrigo.example/fim."
    spoken, rest = split_answer_for_speech(answer, 200)
    assert len(spoken) <= 200 and "**" not in spoken
    assert rest.endswith("https://endrigo.example/fim.") and "**isto**" in rest
    assert text_after_voice(answer, rest) == rest  # the link is in the rest already
    short = "Veja https://endrigo.example/x e me conte."
    spoken, rest = split_answer_for_speech(short, 200)
    assert rest == "" and LINK_PHRASE in spoken
    assert text_after_voice(short, rest) == "https://endrigo.example/x"
    assert text_after_voice("Nada a copiar.", "") is None
