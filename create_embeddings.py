"""Index the knowledge base: chunk documents/, embed what changed, write knowledge_vectors.json.

    python create_embeddings.py [--documents DIR] [--output FILE] [--dry-run] [--batch-size N] [--rebuild]

Incremental: a chunk whose content hash is already in the output file, embedded with the
same model, keeps its stored embedding; only new or edited chunks are sent to OpenAI.
``--dry-run`` prints the plan (added / changed / removed / reused) and sends nothing.
``--rebuild`` ignores the existing file (needed after changing OPENAI_EMBEDDING_MODEL).

Errors are one line on stderr with a non-zero exit status; secrets never appear in them.
The file format and the chunking live in app/knowledge/, shared with the app.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.knowledge import (
    VECTORS_FILENAME,
    Chunk,
    DocumentError,
    VectorFileError,
    build_vectors_file,
    chunk_text,
    embedding_input,
    load_runtime_index,
    load_vectors_file,
    read_source,
    save_vectors_file,
    source_files,
)

# Inputs per request. The API takes 2048, but also caps tokens per request; 256 chunks of
# ~450 tokens stay well under that cap.
DEFAULT_BATCH_SIZE = 256
MAX_BATCH_SIZE = 2048


class CliError(Exception):
    """An error for the user: printed as one line, exit status 1."""


@dataclass
class Plan:
    """What an indexing run will do. ``vectors[i]`` is set for reused chunks, None for the rest."""

    chunks: list[Chunk]
    vectors: list[np.ndarray | None]
    added: list[Chunk] = field(default_factory=list)
    changed: list[Chunk] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reused: int = 0

    @property
    def to_embed(self) -> list[int]:
        return [i for i, vector in enumerate(self.vectors) if vector is None]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Chunk and embed documents/ into knowledge_vectors.json.")
    parser.add_argument("--documents", metavar="DIR", help="folder of .md/.txt sources (default: DOCUMENTS_DIR)")
    parser.add_argument("--output", metavar="FILE", help=f"vector file (default: DIR/{VECTORS_FILENAME})")
    parser.add_argument("--dry-run", action="store_true", help="show what would change; embed and write nothing")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"chunks per embeddings request (1-{MAX_BATCH_SIZE}, default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--rebuild", action="store_true", help="ignore the existing file and embed every chunk")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        parser.error(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}")
    return args


def load_environment() -> None:
    """Read .env exactly as the app does (``app.config.load_env_file``: ENV_FILE, else the
    nearest .env upwards, else the project's; the real environment wins over the file)."""
    from app.config import ConfigError, load_env_file

    try:
        load_env_file()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def load_settings():
    from app.config import ConfigError, Settings

    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def read_chunks(documents: Path, output: Path) -> tuple[list[Chunk], int]:
    """All chunks of the sources in ``documents`` and the number of files they came from."""
    if not documents.is_dir():
        raise CliError(f"documents folder not found: {documents}")
    files = [path for path in source_files(documents) if path.resolve() != output.resolve()]
    if not files:
        raise CliError(f"no documents to index in {documents} (expected .md or .txt files; persona.md is not indexed)")
    chunks: list[Chunk] = []
    for path in files:
        try:
            text = read_source(path)
        except DocumentError as exc:
            raise CliError(str(exc)) from None
        chunks.extend(chunk_text(text, path.name, markdown=path.suffix.lower() == ".md"))
    if not chunks:
        raise CliError(f"no text to index in {documents}: the documents are empty")
    return chunks, len(files)


def read_existing(output: Path, model: str, rebuild: bool):
    """The current vector file, or None (absent, or --rebuild). Refuses to mix models."""
    if rebuild or not output.exists():
        return None
    try:
        existing = load_vectors_file(output)
    except (OSError, VectorFileError) as exc:
        raise CliError(f"cannot use the existing {output} ({exc}); run again with --rebuild to recreate it") from None
    if existing.model != model:
        raise CliError(f"{output} was built with {existing.model} ({existing.dimensions} dims) but "
                       f"OPENAI_EMBEDDING_MODEL is {model}; run again with --rebuild to re-embed everything")
    return existing


def make_plan(chunks: list[Chunk], existing) -> Plan:
    """Match chunks with the existing file by content hash: identical text (even if it moved)
    keeps its embedding."""
    stored: dict[str, np.ndarray] = {}
    old_ids: set[str] = set()
    if existing is not None:
        old_ids = {chunk.id for chunk in existing.chunks}
        stored = {chunk.hash: existing.embeddings[i] for i, chunk in enumerate(existing.chunks)}
    plan = Plan(chunks=chunks, vectors=[stored.get(chunk.hash) for chunk in chunks])
    for chunk, vector in zip(chunks, plan.vectors, strict=True):
        if vector is not None:
            plan.reused += 1
        elif chunk.id in old_ids:
            plan.changed.append(chunk)
        else:
            plan.added.append(chunk)
    new_ids = {chunk.id for chunk in chunks}
    plan.removed = sorted(old_ids - new_ids)
    return plan


def print_plan(plan: Plan, verbose: bool) -> None:
    if verbose:
        for sign, label, items in (("+", "added", plan.added), ("~", "changed", plan.changed)):
            for chunk in items:
                print(f"  {sign} {label:<8}{chunk.id}  {chunk.heading}")
        for chunk_id in plan.removed:
            print(f"  - removed {chunk_id}")
    print(f"{len(plan.chunks)} chunks: {len(plan.added)} added, {len(plan.changed)} changed, "
          f"{len(plan.removed)} removed, {plan.reused} reused")


def embed_missing(plan: Plan, settings, model: str, batch_size: int) -> int:
    """Fill ``plan.vectors`` for the chunks to embed, in batches, with a progress bar."""
    from tqdm import tqdm

    from app.clients.errors import GatewayError
    from app.clients.openai_client import OpenAIGateway

    todo = plan.to_embed
    if not todo:
        return 0
    gateway = OpenAIGateway(settings)
    with tqdm(total=len(todo), unit="chunk", desc="embedding", file=sys.stderr) as progress:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            try:
                vectors = gateway.embed([embedding_input(plan.chunks[i]) for i in batch], model=model)
            except GatewayError as exc:  # classified and redacted by the gateway: one line
                raise CliError(f"embedding failed: {exc.reason}") from None
            if vectors.ndim != 2 or vectors.shape[0] != len(batch):
                raise CliError(f"embedding failed: asked for {len(batch)} vectors, got {vectors.shape[0]}")
            for i, vector in zip(batch, vectors, strict=True):
                plan.vectors[i] = vector
            progress.update(len(batch))
    return len(todo)


def check_dimensions(plan: Plan, existing, output: Path) -> int:
    """All rows must have one width; new vectors must match the reused ones (same model, same dims)."""
    dims = {vector.shape[0] for vector in plan.vectors}
    if len(dims) == 1 and not (existing is not None and plan.reused and dims != {existing.dimensions}):
        return dims.pop()
    fresh = sorted(dims - {existing.dimensions} if existing is not None else dims)
    stored = existing.dimensions if existing is not None else "other"
    raise CliError(f"the model returned {fresh} dimensions but {output} stores {stored}; "
                   "run again with --rebuild to re-embed everything")


def unchanged(plan: Plan, existing) -> bool:
    """True when the file already holds exactly these chunks, in this order."""
    if existing is None or plan.to_embed:
        return False
    return [(c.id, c.hash) for c in existing.chunks] == [(c.id, c.hash) for c in plan.chunks]


def run(args: argparse.Namespace) -> int:
    load_environment()
    settings = load_settings()
    model = settings.openai_embedding_model
    documents = Path(args.documents or settings.documents_dir)
    output = Path(args.output) if args.output else documents / VECTORS_FILENAME
    if not args.dry_run and not settings.openai_api_key:
        raise CliError("OPENAI_API_KEY is not set (environment or .env); use --dry-run to preview without it")

    chunks, file_count = read_chunks(documents, output)
    existing = read_existing(output, model, args.rebuild)
    plan = make_plan(chunks, existing)
    print(f"{documents}: {file_count} files; model {model}")
    print_plan(plan, verbose=args.dry_run)
    if args.dry_run:
        print(f"dry run: would embed {len(plan.to_embed)} chunks; nothing sent, nothing written")
        return 0
    if unchanged(plan, existing):
        print(f"{output} is up to date; nothing to embed")
        return 0

    embedded = embed_missing(plan, settings, model, args.batch_size)
    dims = check_dimensions(plan, existing, output)
    document = build_vectors_file(plan.chunks, np.vstack(plan.vectors), model)
    try:
        save_vectors_file(output, document)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    print(f"wrote {output}: {len(plan.chunks)} chunks ({embedded} embedded, {plan.reused} reused, "
          f"{len(plan.removed)} removed); {model}, {dims} dims")
    prepare_sidecar(output)
    return 0


def prepare_sidecar(output: Path) -> None:
    """Build the app's binary sidecar now, so the first request after a deploy does not parse JSON."""
    try:
        load_runtime_index(output)
    except (OSError, ValueError) as exc:  # the app rebuilds it on its own; not worth failing for
        print(f"note: run-time cache not prepared ({exc})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
