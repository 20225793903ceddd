"""Markdown to WhatsApp formatting (app/assistant/formatting.py): a pure function, tested rule by rule."""
from __future__ import annotations

import pytest

from app.assistant.formatting import to_whatsapp


@pytest.mark.parametrize("markdown, expected", [
    ("**negrito**", "*negrito*"),
    ("__negrito__", "*negrito*"),
    ("um **dois** três", "um *dois* três"),
    ("*itálico*", "_itálico_"),
    ("_itálico_", "_itálico_"),
    ("***ambos***", "*_ambos_*"),
    ("**negrito** e *itálico*", "*negrito* e _itálico_"),
    ("*itálico com **negrito** dentro*", "_itálico com *negrito* dentro_"),
    ("~~riscado~~", "~riscado~"),
    ("~já no formato~", "~já no formato~"),
])
def test_emphasis(markdown, expected):
    assert to_whatsapp(markdown) == expected


@pytest.mark.parametrize("text", [
    "2 * 3 * 4 = 24",
    "5*3*2",
    "snake_case_name e outro_nome",
    "um asterisco * sozinho",
    "preço: R$ 1.500,00",
])
def test_text_that_only_looks_like_emphasis_is_left_alone(text):
    assert to_whatsapp(text) == text


@pytest.mark.parametrize("markdown, expected", [
    ("# Título", "*Título*"),
    ("### Serviços **de** tráfego ###", "*Serviços de tráfego*"),
    ("Título\n======", "*Título*"),
    ("Subtítulo\n---", "*Subtítulo*"),
    ("#hashtag não é título", "#hashtag não é título"),
])
def test_headings_become_bold_lines(markdown, expected):
    assert to_whatsapp(markdown) == expected


def test_bullets_become_dots_and_numbered_lists_are_kept():
    markdown = "Itens:\n- um\n* dois\n+ três\n  - aninhado\n1. primeiro\n2) segundo\n10. décimo **forte**"
    assert to_whatsapp(markdown) == (
        "Itens:\n• um\n• dois\n• três\n  • aninhado\n1. primeiro\n2) segundo\n10. décimo *forte*"
    )


def test_bullet_with_bold_text():
    assert to_whatsapp("- **Sites**: rápidos\n* *Tráfego*") == "• *Sites*: rápidos\n• _Tráfego_"


@pytest.mark.parametrize("markdown, expected", [
    ("[nosso site](https://endrigo.digital)", "nosso site: https://endrigo.digital"),
    ("Veja [aqui](https://x.com/a_b) e **volte**", "Veja aqui: https://x.com/a_b e *volte*"),
    ("[https://x.com](https://x.com)", "https://x.com"),
    ("[**Agenda**](https://x.com/agenda \"título\")", "*Agenda*: https://x.com/agenda"),
    ("![logo da empresa](https://x.com/logo.png)", "https://x.com/logo.png"),
    ("<https://x.com/__init__>", "https://x.com/__init__"),
    ("[escreva](mailto:oi@x.com)", "escreva: oi@x.com"),
])
def test_links_and_images(markdown, expected):
    assert to_whatsapp(markdown) == expected


def test_urls_are_never_reformatted():
    text = "Acesse https://x.com/__init__/*path*/a_b_c?q=**1** agora."
    assert to_whatsapp(text) == text


def test_code_fences_become_plain_text_untouched():
    markdown = "Exemplo:\n```python\nprint(**kwargs)\n# não é título\n- nem lista\n```\nFim"
    assert to_whatsapp(markdown) == "Exemplo:\nprint(**kwargs)\n# não é título\n- nem lista\nFim"


def test_unclosed_fence_runs_to_the_end():
    assert to_whatsapp("```\na **b**") == "a **b**"


def test_inline_code_loses_its_backticks_and_keeps_its_content():
    assert to_whatsapp("use `my__var__name` e `**x**`") == "use my__var__name e **x**"


def test_tables_become_lines_joined_by_dashes():
    markdown = (
        "Planos:\n\n| Plano | Preço | Prazo |\n|:------|:-----:|------:|\n"
        "| **Básico** | sob consulta | 10 dias |\n| Pro | sob consulta |  |\n\nDepois"
    )
    assert to_whatsapp(markdown) == (
        "Planos:\n\nPlano — Preço — Prazo\n*Básico* — sob consulta — 10 dias\nPro — sob consulta\n\nDepois"
    )


def test_table_without_outer_pipes():
    assert to_whatsapp("a | b\n--|--\n1 | 2") == "a — b\n1 — 2"


def test_a_pipe_in_a_sentence_is_not_a_table():
    assert to_whatsapp("isto | aquilo\nsegunda linha") == "isto | aquilo\nsegunda linha"


def test_horizontal_rules_disappear_and_blank_lines_collapse():
    markdown = "Um\n\n---\n\n\n\nDois\n\n\n\n\nTrês"
    assert to_whatsapp(markdown) == "Um\n\nDois\n\nTrês"


def test_trims_and_normalises_line_endings():
    assert to_whatsapp("  \r\n\r\nOlá!  \r\nTudo bem?\r\n\r\n  ") == "Olá!\nTudo bem?"


def test_escaped_markdown_characters_are_literal():
    assert to_whatsapp(r"\*não é itálico\* e 3\_4") == "*não é itálico* e 3_4"


def test_html_breaks_become_newlines():
    assert to_whatsapp("linha 1<br>linha 2<br/>linha 3") == "linha 1\nlinha 2\nlinha 3"


def test_blockquotes_are_kept():
    assert to_whatsapp("> citação **importante**") == "> citação *importante*"


@pytest.mark.parametrize("empty", [None, "", "   ", "\n\n"])
def test_empty_input_gives_empty_text(empty):
    assert to_whatsapp(empty) == ""


def test_plain_text_is_unchanged():
    text = "Oi, Ana! 😊\n\nA Endrigo Digital faz sites e _tráfego pago_.\n\n• Sites\n• Anúncios\n1. Um"
    assert to_whatsapp(text) == text


def test_single_asterisks_are_read_as_markdown_italics():
    # Models write Markdown, where *x* is italic; WhatsApp would show it bold. Markdown wins.
    assert to_whatsapp("faz *sites*") == "faz _sites_"


def test_a_typical_model_answer():
    markdown = (
        "## Nossos serviços\n\nA **Endrigo Digital** oferece:\n\n"
        "1. **Gestão de tráfego pago** (Google e Meta)\n2. *Criação de sites*\n\n"
        "Saiba mais em [nosso site](https://endrigo.digital).\n\n\n\n---\n"
        "Quer que eu chame alguém da equipe?"
    )
    assert to_whatsapp(markdown) == (
        "*Nossos serviços*\n\nA *Endrigo Digital* oferece:\n\n"
        "1. *Gestão de tráfego pago* (Google e Meta)\n2. _Criação de sites_\n\n"
        "Saiba mais em nosso site: https://endrigo.digital.\n\n"
        "Quer que eu chame alguém da equipe?"
    )
