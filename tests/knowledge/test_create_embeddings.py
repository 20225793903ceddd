"""End-to-end tests of create_embeddings.py: the real script in a subprocess, the real OpenAI
SDK, and the OpenAI emulator on 127.0.0.1 (tests/fakes/openai_fake.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.knowledge import chunk_documents, embedding_input, load_vectors_file
from tests.fakes.openai_fake import embed as fake_embedding
from tests.knowledge.test_knowledge import write_sample_kb

PROJECT = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT / "create_embeddings.py"


@pytest.fixture
def docs(tmp_path) -> Path:
    """The frozen sample knowledge base plus the shipped persona (which must not be indexed)."""
    folder = write_sample_kb(tmp_path / "documents")
    (folder / "persona.md").write_text((PROJECT / "documents" / "persona.md").read_text(encoding="utf-8"),
                                       encoding="utf-8")
    return folder


@pytest.fixture
def run(openai_fake, docs, tmp_path):
    """Run the script against the emulator; ``env`` entries override (None removes a variable)."""

    def runner(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DOCUMENTS"))}
        environment.update(OPENAI_API_KEY=openai_fake.api_key, OPENAI_BASE_URL=openai_fake.v1_url)
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        # cwd outside the project: no developer .env is picked up.
        return subprocess.run([sys.executable, str(SCRIPT), "--documents", str(docs), *args], cwd=tmp_path,
                              env=environment, capture_output=True, text=True, timeout=120)

    return runner


def vectors(docs: Path) -> dict:
    return json.loads((docs / "knowledge_vectors.json").read_text(encoding="utf-8"))


def test_writes_the_file_with_model_and_dimensions(run, docs, openai_fake):
    result = run()
    assert result.returncode == 0, result.stderr
    data = vectors(docs)
    assert data["format"] == 1 and data["model"] == "text-embedding-3-small" and data["dimensions"] == 1536
    chunks = chunk_documents(docs)
    assert [c["id"] for c in data["chunks"]] == [c.id for c in chunks]
    assert sorted(openai_fake.embedded_inputs) == sorted(embedding_input(c) for c in chunks)
    # The SDK asked for base64 and decoded it; the stored vector is what the emulator sent.
    loaded = load_vectors_file(docs / "knowledge_vectors.json")
    assert np.array_equal(loaded.embeddings[0], fake_embedding(embedding_input(chunks[0]), 1536))
    assert "wrote" in result.stdout and "1536 dims" in result.stdout
    assert any(".sidecar-" in p.name for p in docs.iterdir())  # the app's cache is prepared


def test_a_second_run_embeds_nothing(run, docs, openai_fake):
    assert run().returncode == 0
    before = (docs / "knowledge_vectors.json").read_bytes()
    openai_fake.reset()
    result = run()
    assert result.returncode == 0, result.stderr
    assert openai_fake.embedded_inputs == [] and openai_fake.requests_to("/v1/embeddings") == []
    assert "up to date" in result.stdout
    assert (docs / "knowledge_vectors.json").read_bytes() == before


def test_editing_one_document_re_embeds_only_its_changed_chunks(run, docs, openai_fake):
    assert run().returncode == 0
    before = load_vectors_file(docs / "knowledge_vectors.json")
    openai_fake.reset()
    path = docs / "servicos.md"
    path.write_text(path.read_text(encoding="utf-8").replace("Consultoria estratégica", "Consultoria e mentoria"),
                    encoding="utf-8")

    result = run()
    assert result.returncode == 0, result.stderr
    [changed] = [c for c in chunk_documents(docs) if "mentoria" in c.text]
    assert openai_fake.embedded_inputs == [embedding_input(changed)]
    assert "1 changed" in result.stdout and "1 embedded" in result.stdout
    after = load_vectors_file(docs / "knowledge_vectors.json")
    unchanged = [i for i, c in enumerate(after.chunks) if c.id != changed.id]
    assert np.array_equal(after.embeddings[unchanged], before.embeddings[unchanged])


def test_moved_text_is_reused_by_hash(run, docs, openai_fake):
    assert run().returncode == 0
    openai_fake.reset()
    path = docs / "servicos.md"
    text = path.read_text(encoding="utf-8")
    # A new section near the top shifts every following chunk id of the file.
    path.write_text(text.replace("## Tráfego pago", "## Novidade\n\nPodcasts corporativos.\n\n## Tráfego pago"),
                    encoding="utf-8")
    result = run()
    assert result.returncode == 0, result.stderr
    assert len(openai_fake.embedded_inputs) == 1 and "Podcasts" in openai_fake.embedded_inputs[0]


def test_removed_documents_are_dropped_without_embedding(run, docs, openai_fake):
    assert run().returncode == 0
    openai_fake.reset()
    (docs / "sobre.md").unlink()
    result = run()
    assert result.returncode == 0, result.stderr
    assert openai_fake.embedded_inputs == []
    assert not any(c["source"] == "sobre.md" for c in vectors(docs)["chunks"])
    assert "3 removed" in result.stdout


def test_dry_run_embeds_and_writes_nothing(run, docs, openai_fake):
    result = run("--dry-run", env={"OPENAI_API_KEY": None})
    assert result.returncode == 0, result.stderr
    assert "+ added   servicos.md#1  Serviços > Tráfego pago" in result.stdout
    assert "would embed 23 chunks" in result.stdout
    assert openai_fake.requests == [] and not (docs / "knowledge_vectors.json").exists()


def test_batches_follow_batch_size(run, openai_fake):
    assert run("--batch-size", "10").returncode == 0
    assert [len(r.json["input"]) for r in openai_fake.requests_to("/v1/embeddings")] == [10, 10, 3]


def test_no_key_is_a_clear_error(run, docs, openai_fake):
    result = run(env={"OPENAI_API_KEY": ""})
    assert result.returncode != 0
    assert result.stderr.strip() == ("error: OPENAI_API_KEY is not set (environment or .env); "
                                     "use --dry-run to preview without it")
    assert openai_fake.requests == [] and not (docs / "knowledge_vectors.json").exists()


def test_rejected_key_is_a_clear_error_without_the_key(run, docs):
    secret = "sk-proj-wrongsecretvalue0123456789"
    result = run(env={"OPENAI_API_KEY": secret})
    assert result.returncode == 1
    assert "error: embedding failed: OpenAI refused the credentials (401)" in result.stderr
    assert "Traceback" not in result.stderr
    assert secret not in result.stdout + result.stderr
    assert not (docs / "knowledge_vectors.json").exists()


def test_server_errors_after_retries_write_nothing(run, docs, openai_fake):
    openai_fake.fail_next(status=500, times=3)  # the first try and the SDK's two retries
    result = run()
    assert result.returncode == 1
    assert "OpenAI server error (500)" in result.stderr
    assert not (docs / "knowledge_vectors.json").exists()


def test_model_change_requires_rebuild(run, docs, openai_fake):
    assert run().returncode == 0
    openai_fake.reset()
    large = {"OPENAI_EMBEDDING_MODEL": "text-embedding-3-large"}
    refused = run(env=large)
    assert refused.returncode == 1 and "--rebuild" in refused.stderr
    assert openai_fake.embedded_inputs == []

    rebuilt = run("--rebuild", env=large)
    assert rebuilt.returncode == 0, rebuilt.stderr
    data = vectors(docs)
    assert data["model"] == "text-embedding-3-large" and data["dimensions"] == 3072
    assert len(openai_fake.embedded_inputs) == len(data["chunks"])


def test_dimension_change_with_the_same_model_requires_rebuild(run, docs):
    # An OpenAI-compatible server that changed its vector size under the same model name.
    path = docs / "knowledge_vectors.json"
    assert run().returncode == 0
    data = vectors(docs)
    data["dimensions"] = 4
    for chunk in data["chunks"]:
        chunk["embedding"] = [0.5, 0.5, 0.5, 0.5]
    data["chunks"][0]["hash"] = "0" * 64  # forces one chunk to be embedded again
    path.write_text(json.dumps(data), encoding="utf-8")
    result = run()
    assert result.returncode == 1
    assert "[1536] dimensions" in result.stderr and "--rebuild" in result.stderr


@pytest.mark.parametrize("setup, message", [
    (lambda d: [p.unlink() for p in d.glob("*.md") if p.name != "persona.md"], "no documents to index"),
    (lambda d: (d / "quebrado.md").write_bytes(b"# T\n\n\xff\xfe invalid"), "cannot read"),
    (lambda d: (d / "knowledge_vectors.json").write_text("{broken"), "--rebuild"),
])
def test_input_problems_are_one_line_errors(run, docs, setup, message):
    setup(docs)
    result = run()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    if message == "cannot read":
        assert "quebrado.md" in lines[0]


def test_reads_dotenv_as_the_app_does(run, docs, openai_fake, tmp_path):
    # The key and the emulator's address only in the .env of the working folder (app.config.load_env_file).
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={openai_fake.api_key}\nOPENAI_BASE_URL={openai_fake.v1_url}\n",
                                   encoding="utf-8")
    result = run(env={"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None})
    assert result.returncode == 0, result.stderr
    assert vectors(docs)["chunks"]
    # ENV_FILE names the file, as for the app; one that does not exist is a one-line error.
    other = tmp_path / "elsewhere.env"
    other.write_text("OPENAI_EMBEDDING_MODEL=text-embedding-3-large\n", encoding="utf-8")
    planned = run("--dry-run", "--rebuild", env={"ENV_FILE": str(other)})
    assert planned.returncode == 0 and "model text-embedding-3-large" in planned.stdout
    missing = run("--dry-run", env={"ENV_FILE": str(tmp_path / "nope.env")})
    assert missing.returncode == 1 and "ENV_FILE" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
