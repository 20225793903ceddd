"""Request conformance: is a request the emulators received one the real API would accept?

Each recorded request (:class:`tests.fakes.base.RecordedRequest`: method, path, query,
headers, body) is checked with openapi-core against the provider's official OpenAPI spec:
operation exists, path/query parameters, security (auth header present), request body
content type and schema (required fields, types, patterns, enums).

Specs live in ``<repo root>/../shared/specs`` (CI clones the repo beside a copy of shared/),
or in ``$SHARED_SPECS_DIR``. Each spec is parsed at most once per process (``lru_cache``):
the 3 MB OpenAI YAML takes ~0.8 s with the C loader, Twilio's ~0.3 s; openapi-core then
resolves lazily, so a validation costs about 1 ms.

Requests the specs do not describe are skipped explicitly (:data:`SKIPPED`), never silently.
"""
from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from werkzeug.datastructures import ImmutableMultiDict

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_FILES = {"twilio": "twilio_api_v2010.yaml", "openai": "openai-openapi.yaml"}
# The spec's server for each provider; recorded paths are joined to it.
SPEC_HOSTS = {"twilio": "https://api.twilio.com", "openai": "https://api.openai.com"}

# (provider, regex on the path, why): requests to endpoints the spec files do not describe.
SKIPPED: list[tuple[str, re.Pattern, str]] = [
    ("twilio", re.compile(r"^/cdn/"), "media CDN (signed S3-style link), not part of the REST API"),
    ("twilio", re.compile(r"^/2010-04-01/Accounts/[^/]+/Messages/[^/]+/Media/ME[0-9a-f]{32}$"),
     "media content (no .json): a redirect to the CDN, not in the spec"),
    ("twilio", re.compile(r"^/v2/Indicators/Typing\.json$"),
     "typing indicator lives on messaging.twilio.com (twilio_messaging_v2 spec, not in shared/specs)"),
]
parse_seconds: dict[str, float] = {}  # provider -> seconds it took to load its spec (for reports)
stats: Counter = Counter()  # (provider, "checked" | "skipped" | "violations") -> count, for the summary
_documents: dict[str, dict] = {}  # provider -> the spec as parsed YAML (for multipart bodies)


def specs_dir() -> Path:
    return Path(os.environ.get("SHARED_SPECS_DIR") or REPO_ROOT.parent / "shared" / "specs")


def specs_available(provider: str | None = None) -> tuple[bool, str]:
    """(available, reason when not)."""
    directory = specs_dir()
    if not directory.is_dir():
        return False, f"API specs directory {directory} not found (set SHARED_SPECS_DIR)"
    for name, filename in SPEC_FILES.items():
        if (provider is None or name == provider) and not (directory / filename).is_file():
            return False, f"API spec {directory / filename} not found"
    return True, ""


@lru_cache(maxsize=None)
def load_spec(provider: str):
    """The openapi-core ``OpenAPI`` object for ``provider``, parsed once per process."""
    import yaml
    from openapi_core import Config, OpenAPI

    started = time.perf_counter()
    with open(specs_dir() / SPEC_FILES[provider], "rb") as f:
        document = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    _drop_discriminators(document)
    # The official specs are trusted: skip the (slow) validation of the spec itself.
    api = OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))
    _documents[provider] = document
    parse_seconds[provider] = time.perf_counter() - started
    return api


def _drop_discriminators(node) -> None:
    """Remove ``discriminator`` hints. OpenAI's spec names none of its mappings (``type:
    function`` -> ``FunctionTool``), so openapi-schema-validator looks for the implicit
    ``#/components/schemas/function`` and fails; in OpenAPI 3.1 the ``oneOf``/``anyOf`` beside
    it is what decides validity, and that is kept."""
    if isinstance(node, dict):
        discriminator = node.get("discriminator")
        if isinstance(discriminator, dict) and ("oneOf" in node or "anyOf" in node):
            del node["discriminator"]
        for value in node.values():
            _drop_discriminators(value)
    elif isinstance(node, list):
        for value in node:
            _drop_discriminators(value)


@dataclass(frozen=True)
class Violation:
    provider: str
    method: str
    path: str
    error: str

    def __str__(self) -> str:
        return f"{self.provider}: {self.method} {self.path}: {self.error}"


def skip_reason(provider: str, path: str) -> str | None:
    for name, pattern, why in SKIPPED:
        if name == provider and pattern.search(path):
            return why
    return None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _schema_error(error) -> str:
    where = "/".join(map(str, error.absolute_path)) or "(value)"
    # For anyOf/oneOf failures, the deepest sub-error names the field that is wrong.
    best = error
    while best.context:
        best = max(best.context, key=lambda e: len(e.absolute_path))
    detail = f" (deepest: {'/'.join(map(str, best.absolute_path))}: {_short(best.message, 200)})" if best is not error else ""
    return f"{where}: {_short(error.message, 200)}{detail}"


def _describe(exc: Exception) -> str:
    """openapi-core errors wrap the jsonschema errors; show those (they name the field)."""
    parts = [f"{type(exc).__name__}: {_short(str(exc), 200)}"]
    cause = exc.__cause__
    while cause is not None:
        errors = getattr(cause, "schema_errors", None)
        if errors:
            parts.append("; ".join(_schema_error(e) for e in errors))
            break
        parts.append(f"{type(cause).__name__}: {_short(str(cause), 200)}")
        cause = cause.__cause__
    return " | ".join(dict.fromkeys(p for p in parts if p))


def _query(query: dict) -> ImmutableMultiDict:
    pairs = []
    for key, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, item))
    return ImmutableMultiDict(pairs)


def _types(schema: dict, registry_root: dict, depth: int = 0) -> set[str]:
    """The JSON types a (sub)schema admits, following $ref and anyOf/oneOf one level at a time."""
    if not isinstance(schema, dict) or depth > 5:
        return set()
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node = registry_root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return _types(node, registry_root, depth + 1)
    found = set()
    kind = schema.get("type")
    found.update(kind if isinstance(kind, list) else [kind] if kind else [])
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            found |= _types(sub, registry_root, depth + 1)
    return found


def _coerce(value, schema: dict, root: dict):
    """A multipart text value as the API reads it: numbers, booleans and arrays per the schema."""
    types = _types(schema, root)
    if isinstance(value, list) or ("array" in types and "string" not in types):
        items = schema.get("items", {}) if isinstance(schema, dict) else {}
        return [_coerce(v, items, root) for v in (value if isinstance(value, list) else [value])]
    if "boolean" in types and value in ("true", "false"):
        return value == "true"
    if "integer" in types and re.fullmatch(r"-?\d+", value):
        return int(value)
    if "number" in types and re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value):
        return float(value)
    return value


def _multipart_body_errors(provider: str, request) -> list[str]:
    """openapi-core 0.23 cannot validate multipart bodies (file parts arrive as bytes, text parts
    as bytes, array defaults are injected and then fail minItems), so check them here: fields
    as the API parses them (``name[]`` is an array, text is cast per schema, a file is a string
    of format binary) against the operation's schema, with ``additionalProperties`` and
    ``required`` enforced."""
    from jsonschema import Draft202012Validator
    from openapi_core.templating.paths.finders import APICallPathFinder

    api, root = load_spec(provider), _documents[provider]
    found = APICallPathFinder(api.spec).find(request.method.lower(), SPEC_HOSTS[provider] + request.path)
    content = found.operation / "requestBody" / "content"
    if "multipart/form-data" not in content:
        return ["multipart/form-data is not a content type of this operation"]
    schema = (content / "multipart/form-data" / "schema").read_value()
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    instance: dict = {}
    for key, value in (request.form or {}).items():
        name = key[:-2] if key.endswith("[]") else key
        instance[name] = _coerce(value if not key.endswith("[]") or isinstance(value, list) else [value],
                                 properties.get(name, {}), root)
    for key in request.files:
        instance[key] = ""  # type: string, format: binary
    # "#/components/..." refs resolve against the schema's own document: carry the components along.
    validator = Draft202012Validator({**schema, "components": root.get("components", {})})
    return [_schema_error(e) for e in validator.iter_errors(instance)]


def validate(provider: str, request) -> Violation | None:
    """Check one recorded request; None when it conforms (or is on the skip list)."""
    from openapi_core.testing import MockRequest
    from openapi_core.validation.request.exceptions import RequestBodyValidationError

    if skip_reason(provider, request.path):
        stats[provider, "skipped"] += 1
        return None
    stats[provider, "checked"] += 1
    content_type = request.headers.get("content-type") or None
    multipart = bool(content_type and content_type.startswith("multipart/form-data"))
    mock = MockRequest(SPEC_HOSTS[provider], request.method.lower(), request.path, args=_query(request.query),
                       headers=dict(request.headers), data=None if multipart else (request.body or None),
                       content_type=content_type.split(";")[0].strip() if content_type else None)
    errors = []
    try:
        for exc in load_spec(provider).iter_request_errors(mock):
            if multipart and isinstance(exc, RequestBodyValidationError):
                continue  # checked below
            errors.append(_describe(exc))
        if multipart and not errors:
            errors += [f"multipart body: {e}" for e in _multipart_body_errors(provider, request)]
    except Exception as exc:  # openapi-core raises a family of OpenAPIError subclasses
        errors.append(_describe(exc))
    if errors:
        stats[provider, "violations"] += 1
        return Violation(provider, request.method, request.path, " || ".join(errors))
    return None


def violations(provider: str, requests) -> list[Violation]:
    return [v for v in (validate(provider, r) for r in requests) if v is not None]
