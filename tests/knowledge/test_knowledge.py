"""Tests of app/knowledge/: chunking, the vector-file format, the sidecar, hybrid search,
the BM25 fallbacks, reloading, RRF and the persona.

Query embeddings come from small in-process gateways (unit tests may replace a client);
the wire format is covered by tests/knowledge/test_create_embeddings.py against the OpenAI emulator.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from app import knowledge as kb
from app.knowledge import (
    Chunk,
    KnowledgeBase,
    VectorFileError,
    build_vectors_file,
    chunk_documents,
    chunk_text,
    embedding_input,
    estimate_tokens,
    load_persona,
    load_runtime_index,
    load_vectors_file,
    reciprocal_rank_fusion,
    save_vectors_file,
    tokenize,
    top_k_indices,
)
from tests.fakes.openai_fake import embed as bag_of_words_embedding

PROJECT = Path(__file__).resolve().parents[2]
DOCUMENTS = PROJECT / "documents"
DIMS = 64


# ---- helpers ---------------------------------------------------------------------------------

def toy_embedding(text: str, dims: int = DIMS) -> np.ndarray:
    """A toy "semantic" model: bag of content words (stopwords and plurals removed)."""
    return bag_of_words_embedding(" ".join(tokenize(text)) or text, dims)


class StubGateway:
    """Stands in for OpenAIGateway: deterministic bag-of-words embeddings, or scripted ones."""

    def __init__(self, available: bool = True, fail: Exception | None = None, dims: int = DIMS):
        self.available = available
        self.fail = fail
        self.dims = dims
        self.overrides: dict[str, np.ndarray] = {}
        self.calls: list[list[str]] = []
        self.options: list[dict] = []

    def embed(self, texts, model=None, *, timeout=None, max_retries=None):
        texts = list(texts)
        self.calls.append(texts)
        self.options.append({"timeout": timeout, "max_retries": max_retries})
        if self.fail is not None:
            raise self.fail
        return np.vstack([self.overrides.get(t, toy_embedding(t, self.dims)) for t in texts])


def write_vectors(path: Path, chunks: list[Chunk], model: str = "text-embedding-3-small",
                  dims: int = DIMS) -> np.ndarray:
    embeddings = np.vstack([toy_embedding(embedding_input(c), dims) for c in chunks])
    save_vectors_file(path, build_vectors_file(chunks, embeddings, model))
    return embeddings


def bump_mtime(path: Path, seconds: int = 5) -> None:
    """Make a change visible even on file systems with coarse timestamps."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 1_000_000_000))


def write_sample_kb(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in SAMPLE_KB.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def docs(tmp_path) -> Path:
    """The frozen sample knowledge base (SAMPLE_KB, at the end of this file) in a temporary folder."""
    return write_sample_kb(tmp_path / "documents")


@pytest.fixture
def sample_chunks(docs) -> list[Chunk]:
    return chunk_documents(docs)


@pytest.fixture
def vec_dir(tmp_path) -> Path:
    """A folder of its own for vector files and their sidecars."""
    folder = tmp_path / "vectors"
    folder.mkdir()
    return folder


def make_kb(docs: Path, gateway=None, **kwargs) -> KnowledgeBase:
    kwargs.setdefault("check_interval", 0.0)
    return KnowledgeBase(docs, embedding_model="text-embedding-3-small", gateway=gateway, **kwargs)


# ---- chunking --------------------------------------------------------------------------------

def test_headings_are_carried_as_a_path():
    text = "# Serviços\n\nIntro.\n\n## Tráfego pago\n\nAnúncios.\n\n### Google\n\nBusca.\n\n## Sites\n\nPáginas.\n"
    chunks = chunk_text(text, "servicos.md")
    assert [(c.heading, c.text) for c in chunks] == [
        ("Serviços", "Intro."),
        ("Serviços > Tráfego pago", "Anúncios."),
        ("Serviços > Tráfego pago > Google", "Busca."),
        ("Serviços > Sites", "Páginas."),
    ]
    assert [c.id for c in chunks] == [f"servicos.md#{i}" for i in range(4)]


def test_comments_and_code_fences_are_not_knowledge_or_headings():
    text = "<!-- SAMPLE: replace me -->\n# Título\n\n```\n# not a heading\n```\n\nTexto.\n"
    chunks = chunk_text(text, "a.md")
    assert len(chunks) == 1
    assert chunks[0].heading == "Título"
    assert "# not a heading" in chunks[0].text and "SAMPLE" not in chunks[0].text


def test_chunks_are_bounded_and_overlap():
    paragraph = " ".join(f"palavra{i}" for i in range(40)) + "."
    text = "# Longo\n\n" + "\n\n".join(f"Parágrafo {n}: {paragraph}" for n in range(30))
    chunks = chunk_text(text, "longo.md", max_tokens=300, overlap_tokens=50)
    assert len(chunks) > 3
    assert all(estimate_tokens(c.text) <= 300 for c in chunks)
    assert all(c.heading == "Longo" for c in chunks)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        overlap = current.text.split("\n\n")[0]
        assert previous.text.endswith(overlap)  # the tail of one chunk opens the next
        assert 50 <= estimate_tokens(overlap) <= 60


def test_one_endless_sentence_is_still_cut_to_size():
    text = "# X\n\n" + " ".join(["blá"] * 3000)
    chunks = chunk_text(text, "x.md", max_tokens=400, overlap_tokens=50)
    assert len(chunks) > 5
    assert all(estimate_tokens(c.text) <= 400 for c in chunks)


def test_ids_and_hashes_are_stable_and_local_to_the_edit():
    text = "# A\n\num.\n\n## B\n\ndois.\n\n## C\n\ntrês.\n"
    first = chunk_text(text, "f.md")
    assert first == chunk_text(text, "f.md")
    assert first[1].hash == hashlib.sha256("A > B\ndois.".encode()).hexdigest()
    edited = chunk_text(text.replace("dois.", "dois, editado."), "f.md")
    assert [a.hash == b.hash for a, b in zip(first, edited, strict=True)] == [True, False, True]


def test_a_hard_wrapped_paragraph_becomes_one_line():
    text = ("# Atendimento\n\nA equipe atende de segunda a sexta-feira,\ndas 9h às 18h, no horário\nde Brasília.\n\n"
            "O assistente\nresponde sempre.\n")
    [chunk] = chunk_text(text, "a.md")
    assert chunk.text == ("A equipe atende de segunda a sexta-feira, das 9h às 18h, no horário de Brasília."
                          "\n\nO assistente responde sempre.")
    assert chunk.hash == hashlib.sha256(f"Atendimento\n{chunk.text}".encode()).hexdigest()


def test_a_list_stays_a_list_with_its_items_joined():
    text = ("# Serviços\n\nOferecemos:\n\n- tráfego pago no Google\n  e no Meta\n- sites\n"
            "  - landing pages rápidas\n    e responsivas\n1. primeiro\n2. segundo\ncontinuação\n")
    assert chunk_text(text, "s.md")[0].text == (
        "Oferecemos:\n\n- tráfego pago no Google e no Meta\n- sites\n  - landing pages rápidas e responsivas\n"
        "1. primeiro\n2. segundo continuação")


def test_headings_tables_code_and_explicit_breaks_are_kept():
    table = "| serviço | prazo |\n|---|---|\n| site | 30 dias |"
    code = "```\nlinha um\n  linha dois\n```"
    text = (f"# T\n## Sub\nTexto\nquebrado.\n\n{table}\n\n{code}\n\n    indentado\n    código\n\n"
            "Rua A, 1  \nSão Paulo\n\n\n\nFim.")
    chunks = chunk_text(text, "t.md")
    assert [c.heading for c in chunks] == ["T > Sub"]
    assert chunks[0].text == (f"Texto quebrado.\n\n{table}\n\n{code}\n\n    indentado\n    código\n\n"
                              "Rua A, 1\nSão Paulo\n\nFim.")


def test_a_list_too_long_for_one_chunk_is_cut_between_items():
    items = "\n".join(f"- item {n}: " + " ".join(f"palavra{n}x{i}" for i in range(12)) + "\n  fim." for n in range(40))
    chunks = chunk_text("# Lista\n\n" + items, "l.md", max_tokens=120, overlap_tokens=20)
    assert len(chunks) > 3 and all(estimate_tokens(c.text) <= 120 for c in chunks)
    for n, chunk in enumerate(chunks):
        units = chunk.text.split("\n\n")[(1 if n else 0):]  # later chunks open with the overlap
        lines = [line for unit in units for line in unit.split("\n")]
        assert all(re.fullmatch(r"- item \d+: (palavra\S+ )+fim\.", line) for line in lines), chunk.text


def test_a_wrapped_line_starting_with_a_number_is_not_a_list():
    assert kb.reflow_markdown("Começamos em\n2026. Foi bom.\n- item\n> citação\n> longa") == (
        "Começamos em 2026. Foi bom.\n- item\n> citação longa")


def test_reflow_applies_to_markdown_only():
    assert chunk_text("linha um\nlinha dois", "a.txt", markdown=False)[0].text == "linha um\nlinha dois"


# A line break inside a sentence: a line that does not end with terminal punctuation
# (. ! ? : ; …, optionally followed by a closing quote or bracket) followed by a line whose
# first letter-or-digit character is a lower-case letter. List items start with a marker, so
# "- item" lines are not counted; a list item that wraps into a lower-case line is.
_TERMINAL = re.compile(r"[.!?:;…][\"'”’)\]]*$")


def broken_sentences(text: str) -> list[tuple[str, str]]:
    lines = text.split("\n")
    return [(a, b) for a, b in zip(lines, lines[1:])
            if a.strip() and b.strip() and not _TERMINAL.search(a.rstrip()) and b.lstrip()[0].islower()]


def test_broken_sentences_are_detected():
    assert broken_sentences("por texto\nou por voz.") == [("por texto", "ou por voz.")]
    assert broken_sentences("Fim.\noutra coisa\n- item\n\nnovo parágrafo") == []


@pytest.mark.parametrize("folder", ["shipped", "frozen sample"])
def test_no_chunk_breaks_a_line_inside_a_sentence(folder, docs):
    chunks = chunk_documents(DOCUMENTS if folder == "shipped" else docs)
    assert chunks
    assert [(c.id, pair) for c in chunks for pair in broken_sentences(c.text)] == []
    assert [(c.id, pair) for c in chunks for pair in broken_sentences(embedding_input(c))] == []


def test_shipped_documents_exclude_the_persona_and_keep_chunks_bounded():
    sources = kb.source_files(DOCUMENTS)
    assert sources and "persona.md" not in [p.name for p in sources]
    chunks = chunk_documents(DOCUMENTS)
    assert chunks and all(estimate_tokens(c.text) <= kb.MAX_CHUNK_TOKENS for c in chunks)
    assert not any("<!--" in c.text for c in chunks)


def test_the_sample_is_marked_and_sized():
    sources = [*kb.source_files(DOCUMENTS), DOCUMENTS / "persona.md"]
    if not all("SAMPLE CONTENT" in p.read_text(encoding="utf-8")[:200] for p in sources):
        pytest.skip("documents/ holds real content now: nothing sample-specific to check")
    assert 4 <= len(sources) - 1 <= 6
    assert 15 <= len(chunk_documents(DOCUMENTS)) <= 25


# ---- tokenizer and ranking -------------------------------------------------------------------

def test_tokenizer_folds_accents_drops_stopwords_and_plurals():
    assert tokenize("Automações de WhatsApp para serviços digitais") == ["automacao", "whatsapp", "servico", "digital"]
    assert tokenize("Quais são os VALORES das mensagens?") == ["valor", "mensagem"]
    assert tokenize("horário") == tokenize("horarios")


def test_whatsapp_abbreviations_are_expanded_before_the_stopwords():
    assert tokenize("qto custa o zap pra vcs? me passa o ctt pf") == ["custa", "whatsapp", "passa", "contato"]
    assert tokenize("insta e face") == ["instagram", "facebook"]


def test_one_typo_away_covers_the_four_kinds_of_typo():
    near = kb.one_typo_away("orcamento")
    for typo_of in ("rcamento", "ocramento", "orcamentu", "orcamentos"):  # delete, swap, replace, insert
        assert typo_of in near
    assert "orcamen" not in near and len(near) > 50 * len("orcamento") - 10


def typo_kb() -> KnowledgeBase:
    text = ("# Preços\n\nO orçamento é sob consulta.\n\n## Carga\n\nCarga pesada.\n\n## Frete\n\nCarga e frete.\n\n"
            "## Carta\n\nUma carta.\n\n## Site\n\nUm site.\n")
    return KnowledgeBase.from_chunks(chunk_text(text, "t.md"))


def test_a_query_word_one_typo_away_is_read_as_the_known_word():
    base = typo_kb()
    assert [c.heading for c in base.ranked_chunks("orcamneto", 1, ("bm25",))] == ["Preços"]
    assert base.ranked_chunks("sitr", 1, ("bm25",)) == []  # four letters: too short to guess
    assert base.ranked_chunks("xyzzyq", 1, ("bm25",)) == []
    # "carxa" is one typo from "carta" (1 chunk) and "carga" (2 chunks): the commoner word wins.
    assert [c.heading for c in base.ranked_chunks("carxa", 3, ("bm25",))] == ["Preços > Carga", "Preços > Frete"]
    retriever = base._current().bm25
    assert kb.query_token_ids(retriever, ["carga", "carxa"]) == [retriever.vocab_dict["carga"]] * 2


def test_only_the_first_unknown_words_of_a_long_query_are_read_for_typos():
    retriever = typo_kb()._current().bm25
    junk = [f"zzzz{chr(ord('a') + n)}q" for n in range(kb.MAX_TYPO_WORDS)]  # unknown, nothing near
    wanted = [retriever.vocab_dict["orcamento"]]
    assert kb.query_token_ids(retriever, [*junk[:-1], "orcamneto", "orcamneto"]) == wanted * 2
    assert kb.query_token_ids(retriever, [*junk, "orcamneto"]) == []
    assert kb.query_token_ids(retriever, [*junk, "orcamento"]) == wanted  # known words always count


def test_the_section_title_counts_twice_for_bm25():
    [chunk] = chunk_text("# Atendimento\n\n## Privacidade\n\nGuardamos pouco.\n", "a.md")
    assert kb.bm25_tokens(chunk) == ["atendimento", "privacidade", "guardamo", "pouco", "privacidade"]


def test_rrf_matches_a_hand_computed_example():
    # dense: 0, 1, 2   bm25: 2, 0, 3   (k = 60, ranks from 1)
    # doc0 = 1/61 + 1/62 = 0.0325225; doc2 = 1/63 + 1/61 = 0.0322665; doc1 = 1/62; doc3 = 1/63
    fused = reciprocal_rank_fusion([[0, 1, 2], [2, 0, 3]], k=60)
    assert [doc for doc, _ in fused] == [0, 2, 1, 3]
    expected = [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62, 1 / 63]
    assert [score for _, score in fused] == pytest.approx(expected)
    assert fused[0][1] == pytest.approx(0.0325225, abs=1e-7)
    assert fused[1][1] == pytest.approx(0.0322665, abs=1e-7)
    # A tie goes to the better single rank, then the smaller index.
    assert reciprocal_rank_fusion([[5], [6]]) == [(5, 1 / 61), (6, 1 / 61)]
    assert reciprocal_rank_fusion([]) == []


def test_top_k_indices_agrees_with_a_full_sort():
    scores = np.random.default_rng(7).standard_normal(1000).astype(np.float32)
    assert list(top_k_indices(scores, 10)) == list(np.argsort(-scores)[:10])
    assert list(top_k_indices(scores[:3], 10)) == list(np.argsort(-scores[:3]))
    assert len(top_k_indices(scores, 0)) == 0


# ---- the vector file -------------------------------------------------------------------------

def test_vector_file_round_trip_is_exact_and_atomic(sample_chunks, vec_dir):
    chunks = sample_chunks
    path = vec_dir / "knowledge_vectors.json"
    embeddings = write_vectors(path, chunks)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert {"format", "model", "dimensions", "created_at", "chunks"} <= raw.keys()
    assert raw["format"] == 1 and raw["dimensions"] == DIMS and raw["model"] == "text-embedding-3-small"
    assert set(raw["chunks"][0]) == {"id", "source", "heading", "text", "hash", "embedding"}
    loaded = load_vectors_file(path)
    assert loaded.chunks == chunks
    assert loaded.embeddings.dtype == np.float32
    assert np.array_equal(loaded.embeddings, embeddings)  # float32 values survive the text format
    assert [p.name for p in vec_dir.iterdir()] == ["knowledge_vectors.json"]  # no temporary file left


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"format": 2, "chunks": []}', "unknown format"),
    ('{"format": 1, "model": "m", "dimensions": 3, "chunks": [{"id": "a#0", "source": "a", "text": "t", '
     '"hash": "h", "embedding": [1, 2]}]}', "dimensions"),
])
def test_invalid_vector_files_are_refused(tmp_path, content, message):
    path = tmp_path / "knowledge_vectors.json"
    path.write_text(content)
    with pytest.raises(VectorFileError, match=message):
        load_vectors_file(path)


# ---- the sidecar -----------------------------------------------------------------------------

def sidecars(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".sidecar" in p.name)


def test_sidecar_is_written_used_and_gitignored(sample_chunks, vec_dir):
    chunks = sample_chunks
    path = vec_dir / "knowledge_vectors.json"
    embeddings = write_vectors(path, chunks)
    first = load_runtime_index(path)
    assert not first.from_sidecar
    [sidecar] = sidecars(vec_dir)
    # .gitignore ignores documents/*.sidecar* (the folder, hence everything in it).
    assert fnmatch.fnmatch(sidecar.name, "*.sidecar*")
    gitignore = (PROJECT / ".gitignore").read_text()
    assert "documents/*.sidecar*" in gitignore

    second = load_runtime_index(path)
    assert second.from_sidecar
    assert second.chunks == chunks
    expected = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    assert np.allclose(second.matrix, expected, atol=1e-6)
    assert np.array_equal(np.asarray(first.matrix), np.asarray(second.matrix))


def test_sidecar_is_invalidated_when_the_json_changes(sample_chunks, vec_dir):
    chunks = sample_chunks
    path = vec_dir / "knowledge_vectors.json"
    write_vectors(path, chunks)
    load_runtime_index(path)
    old = sidecars(vec_dir)

    write_vectors(path, chunks[:5])
    reloaded = load_runtime_index(path)
    assert not reloaded.from_sidecar and reloaded.chunks == chunks[:5]
    assert sidecars(vec_dir) != old and len(sidecars(vec_dir)) == 1  # the stale one is gone
    assert load_runtime_index(path).from_sidecar


def test_same_size_and_mtime_with_other_content_still_invalidates(sample_chunks, vec_dir):
    chunks = sample_chunks
    path = vec_dir / "knowledge_vectors.json"
    write_vectors(path, chunks)
    load_runtime_index(path)
    stat = path.stat()
    data = path.read_bytes().replace(b"Endrigo", b"Endrig0", 1)  # same size
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    reloaded = load_runtime_index(path)
    assert not reloaded.from_sidecar
    assert any("Endrig0" in c.text for c in reloaded.chunks)


def test_read_only_folder_falls_back_to_parsing(sample_chunks, vec_dir, monkeypatch, caplog):
    chunks = sample_chunks
    path = vec_dir / "knowledge_vectors.json"
    write_vectors(path, chunks)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Tests may run as root, where chmod does not stop writes: refuse at the one place that creates files.
    monkeypatch.setattr(kb.sidecar.tempfile, "mkdtemp", refuse)
    with caplog.at_level(logging.WARNING, logger="app.knowledge"):
        for _ in range(2):
            index = load_runtime_index(path)
            assert not index.from_sidecar and index.chunks == chunks
    assert sidecars(vec_dir) == []
    assert sum("cannot write the sidecar" in r.getMessage() for r in caplog.records) == 1


def test_corrupt_sidecar_is_ignored_and_rebuilt(sample_chunks, vec_dir):
    chunks = sample_chunks
    path = vec_dir / "knowledge_vectors.json"
    write_vectors(path, chunks)
    load_runtime_index(path)
    [sidecar] = sidecars(vec_dir)
    (sidecar / "vectors.npy").write_bytes(b"garbage")
    index = load_runtime_index(path)
    assert not index.from_sidecar and index.chunks == chunks


# ---- search ----------------------------------------------------------------------------------

def vectors_kb(docs: Path, gateway=None, **kwargs) -> KnowledgeBase:
    write_vectors(docs / "knowledge_vectors.json", chunk_documents(docs))
    return make_kb(docs, gateway or StubGateway(), **kwargs)


def test_hybrid_search_finds_the_right_chunk(docs):
    gateway = StubGateway()
    base = vectors_kb(docs, gateway)
    assert base.mode == "hybrid"
    results = base.search("Quanto custa o serviço?", k=3)
    assert results[0].chunk_id == "perguntas-frequentes.md#0"
    assert results[0].heading == "Perguntas frequentes > Quanto custa?"
    assert "sob consulta" in results[0].text
    assert len(results) == 3 and results[0].score > results[1].score
    assert gateway.calls == [["Quanto custa o serviço?"]]
    # A query embedding inside a turn fails fast instead of waiting through the SDK's retries.
    assert gateway.options == [{"timeout": 2.0, "max_retries": 0}]
    base.search("Quanto custa o serviço?", k=3)
    assert len(gateway.calls) == 1  # the query embedding is cached
    assert base.search("preciso de um site com botão de WhatsApp", k=1)[0].heading == "Serviços > Sites e landing pages"


def test_dense_ranking_finds_what_words_do_not(docs):
    gateway = StubGateway()
    base = vectors_kb(docs, gateway)
    target = next(c for c in chunk_documents(docs) if c.heading.endswith("Privacidade"))
    # A query sharing no word with the knowledge base, whose "meaning" is the privacy chunk.
    gateway.overrides["xyzzy plugh"] = toy_embedding(embedding_input(target))
    results = base.search("xyzzy plugh", k=2)
    assert results[0].chunk_id == target.id
    assert base.search("xyzzy plugh", k=2)[0].chunk_id == target.id


def test_ranked_chunks_uses_only_the_named_rankers(docs):
    gateway = StubGateway()
    base = vectors_kb(docs, gateway)
    target = next(c for c in chunk_documents(docs) if c.heading.endswith("Privacidade"))
    gateway.overrides["horário de atendimento"] = toy_embedding(embedding_input(target))
    # BM25 alone finds the words; the embedding alone follows the (scripted) meaning.
    assert base.ranked_chunks("horário de atendimento", 1, ("bm25",))[0].id == "atendimento.md#0"
    assert base.ranked_chunks("horário de atendimento", 1, ("embeddings",))[0].id == target.id
    fused = [p.chunk_id for p in base.search("horário de atendimento", k=4)]
    assert [c.id for c in base.ranked_chunks("horário de atendimento", 4)] == fused
    assert base.ranked_chunks("xyzzy", 3, ("bm25",)) == []
    with pytest.raises(ValueError, match="unknown rankers"):
        base.ranked_chunks("horário", 3, ("bm52",))


def test_status_reports_the_loaded_index(docs):
    base = vectors_kb(docs)
    status = base.status()
    assert status["chunks"] == base.chunk_count == len(chunk_documents(docs))
    assert status["mode"] == "hybrid" and status["model"] == "text-embedding-3-small" and status["dims"] == DIMS
    assert status["source"] == "vectors" and status["loaded_at"]


def test_provider_error_falls_back_to_bm25_and_warns_once_a_minute(docs, caplog):
    gateway = StubGateway(fail=RuntimeError("provider down"))
    base = vectors_kb(docs, gateway)
    with caplog.at_level(logging.WARNING, logger="app.knowledge"):
        first = base.search("horário de atendimento", k=3)
        second = base.search("falar com uma pessoa", k=3)
    assert first[0].chunk_id == "atendimento.md#0"
    assert second[0].chunk_id == "atendimento.md#1"
    warnings = [r for r in caplog.records if "query embedding failed" in r.getMessage()]
    assert len(warnings) == 1
    assert base.status()["last_error"]


def test_query_vector_of_the_wrong_size_falls_back_to_bm25(docs):
    base = vectors_kb(docs, StubGateway(dims=DIMS * 2))
    assert base.search("horário de atendimento", k=1)[0].chunk_id == "atendimento.md#0"
    assert "dims" in base.status()["last_error"]


def test_no_vector_file_answers_from_the_documents(docs):
    base = make_kb(docs, StubGateway())
    assert base.mode == "bm25"
    status = base.status()
    assert status["source"] == "documents" and "create_embeddings.py" in status["note"]
    assert base.search("automação de whatsapp", k=1)[0].chunk_id == "servicos.md#3"
    assert base.search("", k=3) == [] and base.search("xyzzy", k=3) == []


def test_no_key_never_reads_the_vector_file(docs):
    (docs / "knowledge_vectors.json").write_text("this would fail to parse")
    gateway = StubGateway(available=False)
    base = make_kb(docs, gateway)
    assert base.mode == "bm25" and base.status()["source"] == "documents"
    assert base.search("sites e landing pages", k=1)[0].chunk_id == "servicos.md#4"
    assert gateway.calls == []


def test_model_mismatch_falls_back_to_bm25(docs):
    write_vectors(docs / "knowledge_vectors.json", chunk_documents(docs), model="text-embedding-3-large")
    base = make_kb(docs, StubGateway())
    assert base.mode == "bm25"
    assert "--rebuild" in base.status()["note"]
    assert base.search("consultoria", k=1)[0].source == "servicos.md"


def test_reload_when_the_vector_file_changes(docs):
    chunks = chunk_documents(docs)
    path = docs / "knowledge_vectors.json"
    base = vectors_kb(docs)
    assert base.chunk_count == len(chunks)
    extra = chunk_text("# Novidade\n\nAgora também fazemos podcasts corporativos.\n", "novidade.md")
    write_vectors(path, chunks + extra)
    bump_mtime(path)
    assert base.chunk_count == len(chunks) + 1
    assert base.search("podcasts", k=1)[0].chunk_id == "novidade.md#0"


def test_reload_when_a_document_changes_in_bm25_mode(docs):
    base = make_kb(docs)
    assert base.search("podcasts", k=1) == []
    (docs / "novidade.md").write_text("# Novidade\n\nAgora também fazemos podcasts.\n", encoding="utf-8")
    assert base.search("podcasts", k=1)[0].chunk_id == "novidade.md#0"


def test_files_are_checked_at_most_every_interval(docs):
    base = make_kb(docs, check_interval=3600)
    assert base.search("podcasts", k=1) == []
    (docs / "novidade.md").write_text("# Novidade\n\nPodcasts.\n", encoding="utf-8")
    assert base.search("podcasts", k=1) == []  # not checked yet
    base._next_check = 0.0
    assert base.search("podcasts", k=1)


def test_concurrent_searches_during_reloads(docs):
    base = vectors_kb(docs)
    path = docs / "knowledge_vectors.json"
    chunks = chunk_documents(docs)
    errors: list[BaseException] = []

    def searcher():
        try:
            for _ in range(50):
                assert base.search("horário de atendimento", k=2)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(6)]
    for thread in threads:
        thread.start()
    for n in range(3):
        write_vectors(path, chunks[: len(chunks) - n])
        bump_mtime(path, seconds=n + 1)
    for thread in threads:
        thread.join()
    assert errors == []


def test_vocabulary_terms_are_names_of_the_knowledge_base(docs):
    terms = make_kb(docs).vocabulary_terms()
    for expected in ("Endrigo Digital", "WhatsApp", "Google Ads", "Instagram", "Brasília", "CRM"):
        assert expected in terms
    assert "Depois" not in terms and "Você" not in terms


def test_for_settings_uses_the_configured_folder_and_model(docs):
    from app.config import Settings

    settings = Settings.from_env(env={}, documents_dir=str(docs), openai_embedding_model="text-embedding-3-large")
    base = KnowledgeBase.for_settings(settings, StubGateway(available=False))
    assert base.documents_dir == docs and base.embedding_model == "text-embedding-3-large"
    assert base.chunk_count == len(chunk_documents(docs))


# ---- persona ---------------------------------------------------------------------------------

def test_persona_has_the_layers_and_placeholders():
    persona = load_persona(DOCUMENTS)
    for heading in ("## Core", "## Style", "## Context", "## Behavior"):
        assert heading in persona
    for tool in ("search_knowledge", "get_user_profile", "update_user_profile", "capture_lead",
                 "request_human_handoff", "get_current_datetime"):
        assert tool in persona
    assert "<!--" not in persona
    filled = persona.format(context="CTX", profile="PROFILE", datetime="NOW")  # no other braces
    assert "CTX" in filled and "PROFILE" in filled and "NOW" in filled


def test_persona_reloads_on_change_and_has_a_default(tmp_path):
    assert "## Behavior" in load_persona(tmp_path)  # missing: the built-in minimal persona
    path = tmp_path / "persona.md"
    path.write_text("## Core\n\nPrimeira versão.\n", encoding="utf-8")
    assert "Primeira versão" in load_persona(tmp_path)
    path.write_text("## Core\n\nSegunda versão.\n", encoding="utf-8")
    bump_mtime(path)
    assert "Segunda versão" in load_persona(tmp_path)


def test_a_failed_reload_keeps_the_previous_version(docs, monkeypatch):
    base = make_kb(docs)
    assert base.search("consultoria", k=1)
    monkeypatch.setattr(kb, "build_bm25", lambda chunks: 1 / 0)
    (docs / "novidade.md").write_text("# Novidade\n\nPodcasts.\n", encoding="utf-8")
    assert base.search("consultoria", k=1)[0].source == "servicos.md"  # old snapshot, no exception


def test_in_memory_knowledge_base():
    chunks = chunk_text("# A\n\nTráfego pago no Google.\n\n## B\n\nSites rápidos.\n", "m.md")
    embeddings = np.vstack([toy_embedding(embedding_input(c)) for c in chunks])
    base = KnowledgeBase.from_chunks(chunks, embeddings, gateway=StubGateway())
    assert base.mode == "hybrid" and base.status()["source"] == "memory"
    assert base.search("sites", k=1)[0].chunk_id == "m.md#1"
    base.reload()
    assert base.chunk_count == 2


# A frozen copy of the sample knowledge base (documents/ as first shipped): the tests keep
# working when operators replace documents/ with the real content.
SAMPLE_KB = {
    "assistente.md": """\
# O que o assistente pode fazer

## Conversar por texto e por áudio

O assistente virtual da Endrigo Digital conversa pelo WhatsApp em português, por texto
ou por mensagens de voz. Ele entende áudios e, quando faz sentido, responde também com
um áudio na voz do Endrigo.

## Tirar dúvidas sobre os serviços

O assistente explica os serviços da Endrigo Digital (tráfego pago, redes sociais,
automação de WhatsApp, sites e landing pages, consultoria), como funciona o trabalho e
o horário de atendimento. Ele responde com base nas informações oficiais da empresa e
não inventa preços, prazos ou promessas.

## Registrar seu contato

Se você tiver interesse em um serviço, o assistente pode anotar seu nome, sua empresa,
o que você procura e a melhor forma e horário para contato. Com isso, a equipe prepara
uma conversa de diagnóstico ou uma proposta sob medida.

## Passar para um atendente humano

Quando você pedir, quando o assunto exigir uma análise do seu caso (orçamento,
contrato, reclamação, assuntos financeiros) ou quando o assistente não souber
responder, ele passa a conversa para uma pessoa da equipe e avisa você.
""",
    "atendimento.md": """\
# Atendimento

## Horário de atendimento

A equipe da Endrigo Digital atende de segunda a sexta-feira, das 9h às 18h, no horário
de Brasília. Não há atendimento humano em fins de semana e feriados nacionais.
O assistente virtual do WhatsApp responde a qualquer hora, todos os dias.

## Falar com uma pessoa

Para falar com uma pessoa da equipe, basta pedir aqui mesmo no WhatsApp, por exemplo:
"quero falar com um atendente". O assistente registra o pedido e avisa a equipe, que
continua a conversa neste mesmo número. Pedidos feitos dentro do horário de
atendimento costumam ser respondidos no mesmo dia; fora do horário, a resposta vem no
próximo dia útil.

## Mensagens de texto e de voz

Você pode escrever ou mandar mensagens de voz (áudios). O assistente entende áudios em
português e pode responder em texto ou em áudio. Imagens, vídeos e documentos ainda não
são analisados pelo assistente: descreva por texto ou por áudio o que precisa.

## Privacidade

Guardamos apenas o necessário para atender você: seu número de WhatsApp, seu nome e o
que você nos conta durante a conversa. Esses dados são usados só para o atendimento e
para propostas da Endrigo Digital, nunca são vendidos. Se quiser que seus dados sejam
apagados, peça a uma pessoa da equipe.
""",
    "perguntas-frequentes.md": """\
# Perguntas frequentes

## Quanto custa?

Os preços são sob consulta. O valor depende do serviço, do tamanho do projeto e dos
objetivos, por isso a equipe prepara uma proposta depois de uma conversa de
diagnóstico. Se quiser, o assistente registra seu contato para a equipe falar com você.

## Qual é o prazo para começar?

O prazo de início é combinado na proposta, de acordo com o escopo e a agenda da equipe.
Projetos de site e de automação de WhatsApp têm etapas de criação e aprovação antes de
entrar no ar; gestão de tráfego pago e de redes sociais começam depois do
planejamento inicial.

## Vocês garantem resultados?

Nenhuma consultoria séria pode garantir vendas ou um número exato de clientes, porque
o resultado depende também do produto, do mercado e do atendimento. O que garantimos é
método, metas claras, acompanhamento próximo e relatórios transparentes.

## Atendem empresas de qualquer cidade?

Sim. O atendimento é feito on-line, por WhatsApp e videochamadas, para empresas de
todo o Brasil.

## Preciso ter site ou redes sociais para começar?

Não. Se você está começando do zero, a consultoria ajuda a decidir por onde começar e
quais canais fazem mais sentido para o seu negócio.

## Como é o contrato?

As condições de contrato, pagamento e duração mínima são apresentadas na proposta e
podem variar conforme o serviço. Para tirar dúvidas específicas sobre contrato, peça
para falar com uma pessoa da equipe.
""",
    "servicos.md": """\
# Serviços

A Endrigo Digital oferece cinco frentes de trabalho, que podem ser contratadas
separadas ou combinadas em um plano. Os valores de todos os serviços são sob consulta,
porque dependem do tamanho do projeto e dos objetivos de cada cliente.

## Tráfego pago

Planejamento, criação e gestão de campanhas de anúncios no Google Ads, no Meta Ads
(Instagram e Facebook) e em outras plataformas quando fizer sentido. Inclui definição
de público, criação de anúncios, testes, otimização contínua e relatórios de
resultado. O orçamento de mídia, pago diretamente às plataformas, é separado do valor
da gestão.

## Redes sociais

Gestão de perfis no Instagram, Facebook, LinkedIn e TikTok: planejamento de conteúdo,
calendário editorial, criação de posts, legendas e roteiros de vídeos curtos, além de
acompanhamento dos números de alcance e engajamento. Também orientamos a equipe do
cliente para que ela possa produzir conteúdo com mais autonomia.

## Automação de WhatsApp

Atendimento automatizado no WhatsApp com assistentes virtuais como este: respostas a
perguntas frequentes, mensagens de voz, captura de contatos interessados e
encaminhamento para um atendente humano quando necessário. A automação pode ser
integrada a planilhas, CRM e outros sistemas que o cliente já usa.

## Sites e landing pages

Criação de sites institucionais e landing pages rápidas, responsivas e pensadas para
conversão, com formulários, botão de WhatsApp e integração com ferramentas de
análise como o Google Analytics. Também fazemos ajustes e melhorias em sites
existentes.

## Consultoria

Consultoria estratégica de marketing digital para quem quer organizar a casa antes de
investir: diagnóstico da presença digital, definição de público e posicionamento,
plano de ação e acompanhamento em reuniões periódicas. Indicada também para equipes
internas que precisam de direção e revisão do trabalho.
""",
    "sobre.md": """\
# Sobre a Endrigo Digital

A Endrigo Digital é uma consultoria de marketing digital que ajuda pequenas e médias
empresas a atrair clientes pela internet e a atender melhor quem já chegou. O trabalho
junta estratégia, anúncios, conteúdo para redes sociais e automação de atendimento,
sempre com foco em resultado medido e em uma comunicação simples, sem jargão.

## Quem atende

Endrigo é a voz da Endrigo Digital neste WhatsApp. As conversas são conduzidas por um
assistente virtual que fala em nome dele, com o mesmo jeito direto e acolhedor. Quando
o assunto pede uma análise do seu caso, uma proposta ou uma decisão, o atendimento
passa para uma pessoa da equipe.

## Como trabalhamos

Todo projeto começa com uma conversa de diagnóstico para entender o negócio, o público
e os objetivos. Depois vem uma proposta com escopo, prazos e investimento. Durante a
execução, o cliente recebe relatórios periódicos com os números mais importantes e
recomendações do que ajustar. Preferimos metas claras e acompanhamento próximo a
promessas de resultado garantido.
""",
}
