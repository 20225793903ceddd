"""OpenAI API emulator: Responses (with the function-calling loop), Embeddings, Transcriptions, Models.

Point the real SDK at ``fake.v1_url``. It refuses what the API refuses and that our code
could get wrong: missing auth, unknown/retired parameters, non-strict schemas sent with
``strict: true``, input items of a type the API does not know, reasoning items without their
encrypted content when ``store`` is false, tool outputs whose call_id the model never issued
(or calls left without an output), the 2048-input embedding limit, audio without a supported
extension, files over 25 MB or undecodable. Reasoning items come with ``encrypted_content``
exactly when ``include`` asks for ``reasoning.encrypted_content``; ``inject_output`` adds
items of any type (a ``web_search_call``, a type from the future) to the next responses. Replies are scripted (``queue_*``/``set_handler``) or a
deterministic echo; embeddings are deterministic bag-of-words vectors. The model catalog
(``GET /v1/models[/{model}]``) carries each model's ``shutdown_date``; ``set_model`` and
``remove_model`` change it, unknown models are 404 ``model_not_found``.

Usage emulates OpenAI's prompt cache: per ``prompt_cache_key`` (requests without one share
one bucket), ``input_tokens_details.cached_tokens`` is the longest common prefix of this
request's serialized (instructions, tools, input) with an earlier request of the same key,
in tokens (~4 characters per token, ``estimate_tokens``), counted only when it is at least
1024 tokens and rounded down to a multiple of 128; ``input_tokens`` is the whole serialized
request in tokens. ``cache_hits`` lists (key, cached tokens) per response.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import secrets
import subprocess
import tempfile
import threading
import time
from collections import deque
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from werkzeug.wrappers import Request, Response

from .audio_samples import ffmpeg_exe
from .base import FakeServer, json_response

EMBEDDING_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
AUDIO_EXTENSIONS = {"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"}
MAX_AUDIO_BYTES = 25 * 1024 * 1024
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_TOKENS = 8192
# Parameters POST /v1/responses accepts (the SDK's own list); anything else is "Unknown parameter".
RESPONSE_PARAMS = {
    "access_programs", "background", "background_options", "context_management", "conversation", "image",
    "include", "input", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream",
    "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
}
# Input item types of the Responses API (the ``type`` values of InputItem and Item in the
# official spec, shared/specs/openai-openapi.yaml); any other type is refused.
INPUT_ITEM_TYPES = {
    "message", "file_search_call", "computer_call", "computer_call_output", "web_search_call", "function_call",
    "function_call_output", "tool_search_call", "tool_search_output", "additional_tools", "reasoning",
    "compaction", "image_generation_call", "code_interpreter_call", "local_shell_call", "local_shell_call_output",
    "shell_call", "shell_call_output", "apply_patch_call", "apply_patch_call_output", "mcp_list_tools",
    "mcp_approval_request", "mcp_approval_response", "mcp_call", "custom_tool_call_output", "custom_tool_call",
    "compaction_trigger", "item_reference", "program", "program_output",
}
ENCRYPTED_REASONING = "reasoning.encrypted_content"
# Prompt caching: the API caches prefixes of at least 1024 tokens, in increments of 128.
CACHE_MIN_TOKENS = 1024
CACHE_INCREMENT_TOKENS = 128
CACHE_REQUESTS_PER_KEY = 64  # earlier requests remembered per prompt_cache_key
_USER_PARTS = {"input_text", "input_image", "input_file", "input_audio"}
_ASSISTANT_PARTS = {"output_text", "refusal"}
_WORD = re.compile(r"\w+", re.UNICODE)
# The catalog a fresh emulator serves: model id -> shutdown_date (None: none announced).
# Retiring models carry the dates OpenAI announced (shared/PROVIDERS.md).
DEFAULT_MODELS: dict[str, str | None] = {
    "gpt-5.4": None, "gpt-5.4-mini": None, "gpt-transcribe": None, "gpt-realtime-2": None,
    **{model: None for model in EMBEDDING_DIMS},
    "gpt-realtime": "2027-01-20", "gpt-realtime-mini": "2027-01-20",
    "whisper-1": "2027-02-26", "gpt-4o-transcribe": "2027-02-26", "gpt-4o-mini-transcribe": "2027-02-26",
}


class ApiError(Exception):
    """Raised inside handlers; becomes an OpenAI-shaped error response."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def estimate_tokens(text: str) -> int:
    """Rough tokenizer (~4 characters per token), enough for usage figures and limits."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


@lru_cache(maxsize=100_000)
def _word_vector(word: str, dims: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


def embed(text: str, dims: int) -> np.ndarray:
    """Deterministic unit vector: sum of per-(lower-cased)-word random vectors, so texts
    sharing words are close in cosine similarity, as with real embeddings."""
    words = _WORD.findall(text.lower()) or [text]
    vector = np.sum([_word_vector(w, dims) for w in words], axis=0)
    return (vector / (np.linalg.norm(vector) or 1.0)).astype(np.float32)


# -- output items -------------------------------------------------------------------------
def text_item(text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": _id("msg"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def function_call_item(name: str, arguments: dict | str, call_id: str | None = None) -> dict:
    return {"type": "function_call", "id": _id("fc"), "call_id": call_id or _id("call"), "name": name,
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments), "status": "completed"}


def reasoning_item(summary: str | None = None) -> dict:
    """A reasoning output item (its encrypted content is added when the request includes it)."""
    return {"type": "reasoning", "id": _id("rs"),
            "summary": [{"type": "summary_text", "text": summary}] if summary else []}


def web_search_call_item(query: str = "endrigo digital") -> dict:
    """A built-in tool's output item, as the API returns it when web search ran."""
    return {"type": "web_search_call", "id": _id("ws"), "status": "completed",
            "action": {"type": "search", "query": query}}


def _normalize_item(item: Any, body: dict | None = None) -> dict:
    """Accept a str (text reply) or a partial item dict and fill in what the API would add."""
    if isinstance(item, str):
        return text_item(item)
    if item.get("type") == "function_call":
        return function_call_item(item["name"], item.get("arguments", {}), item.get("call_id"))
    if item.get("type") == "message" and "text" in item:
        return text_item(item["text"])
    if item.get("type") == "reasoning":
        reasoning = {"id": _id("rs"), "summary": [], **item}
        reasoning.pop("encrypted_content", None)
        if ENCRYPTED_REASONING in ((body or {}).get("include") or []):
            reasoning["encrypted_content"] = "gAAAAA" + base64.b64encode(secrets.token_bytes(48)).decode()
        return reasoning
    return {"id": _id("item"), **item}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def _item_text(item: dict) -> str:
    """The part of an output item the model generated (for usage figures)."""
    if item.get("type") == "function_call":
        return item["name"] + item["arguments"]
    return " ".join(p.get("text") or p.get("refusal") or "" for p in item.get("content") or [])


def _strict_issues(schema: Any, context: str = "()") -> list[str]:
    """What strict mode refuses: objects must forbid extra keys and require every property."""
    issues: list[str] = []
    if not isinstance(schema, dict):
        return issues
    props = schema.get("properties")
    if schema.get("type") == "object" or props is not None:
        if schema.get("additionalProperties") is not False:
            issues.append(f"In context={context}, 'additionalProperties' is required to be supplied and to be false.")
        missing = [k for k in (props or {}) if k not in (schema.get("required") or [])]
        if missing:
            issues.append(f"In context={context}, 'required' is required to be supplied and to be an array "
                          f"including every key in properties. Missing '{missing[0]}'.")
    for key, sub in (props or {}).items():
        issues += _strict_issues(sub, f"('properties', '{key}')")
    issues += _strict_issues(schema.get("items"), "('items',)")
    for sub in schema.get("anyOf") or []:
        issues += _strict_issues(sub, "('anyOf',)")
    for key, sub in (schema.get("$defs") or schema.get("definitions") or {}).items():
        issues += _strict_issues(sub, f"('$defs', '{key}')")
    return issues


class OpenAIFake(FakeServer):
    def __init__(self, api_key: str = "sk-test-fake-0123456789", fast_retries: bool = True):
        super().__init__()
        self.api_key = api_key
        # The SDK ignores ``retry-after: 0`` (it only honours delays > 0) and would back off
        # 0.5-8 s; with fast_retries injected retryable faults also carry ``retry-after-ms: 1``.
        self.fast_retries = fast_retries
        self._state_lock = threading.Lock()
        self._init_state()

    def _init_state(self) -> None:
        self._script: deque[dict] = deque()
        self._injected: deque[list] = deque()  # extra output items, one list per coming response
        self._handler: Callable[[dict], Any] | None = None
        self._transcriber: Callable[[bytes], str] | None = None
        self.transcript_text = "Olá, tudo bem?"
        self.validate_audio = True  # decode uploads with ffmpeg, like the API does
        self.embedded_inputs: list[str] = []
        self.issued_call_ids: set[str] = set()
        self.responses: dict[str, dict] = {}  # stored responses (store != false)
        self._last_user_text: dict[str, str] = {}
        self.models: dict[str, str | None] = dict(DEFAULT_MODELS)
        self._cache: dict[str | None, deque[str]] = {}  # prompt_cache_key -> earlier serialized prompts
        self.cache_hits: list[tuple[str | None, int]] = []  # (prompt_cache_key, cached tokens) per response

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self._init_state()

    @property
    def v1_url(self) -> str:
        return self.base_url + "/v1"

    # -- scripting --------------------------------------------------------------------------
    def queue_output(self, items: list, status: str = "completed", incomplete_details: dict | None = None) -> None:
        """Queue one response made of ``items`` (str for text, or item dicts)."""
        with self._state_lock:
            self._script.append({"items": list(items), "status": status, "incomplete_details": incomplete_details})

    def inject_output(self, items: list, responses: int = 1) -> None:
        """Put ``items`` (dicts of any type, even unknown ones) before the output of each of the
        next ``responses`` responses, scripted or not."""
        with self._state_lock:
            for _ in range(responses):
                self._injected.append(list(items))

    def queue_text(self, text: str) -> None:
        self.queue_output([text])

    def queue_function_call(self, name: str, arguments: dict, call_id: str | None = None) -> None:
        self.queue_output([{"type": "function_call", "name": name, "arguments": arguments, "call_id": call_id}])

    def queue_incomplete(self, reason: str = "max_output_tokens", text: str = "Resposta cort") -> None:
        self.queue_output([text_item(text, status="incomplete")], status="incomplete",
                          incomplete_details={"reason": reason})

    def queue_refusal(self, text: str = "I'm sorry, I can't help with that.") -> None:
        self.queue_output([{"type": "message", "id": _id("msg"), "status": "completed", "role": "assistant",
                            "content": [{"type": "refusal", "refusal": text}]}])

    def set_handler(self, handler: Callable[[dict], Any] | None) -> None:
        """``handler(json_body)`` returns text, one item dict, or a list of items; used when nothing is queued."""
        self._handler = handler

    def transcription_for(self, fn: Callable[[bytes], str] | None) -> None:
        self._transcriber = fn

    def set_model(self, model_id: str, shutdown_date: str | None = None) -> None:
        """Serve ``model_id`` in the catalog, with ``shutdown_date`` (``YYYY-MM-DD``) or none announced."""
        with self._state_lock:
            self.models[model_id] = shutdown_date

    def remove_model(self, model_id: str) -> None:
        """Make ``model_id`` unknown (404 ``model_not_found``), as a model past its shutdown is."""
        with self._state_lock:
            self.models.pop(model_id, None)

    # -- errors -------------------------------------------------------------------------------
    _DEFAULTS = {
        400: ("invalid_request_error", None, "Bad request"),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-***. You can find your "
                                                          "API key at https://platform.openai.com/account/api-keys."),
        403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
        404: ("invalid_request_error", None, "Not found"),
        408: ("invalid_request_error", None, "Request timed out."),
        409: ("invalid_request_error", None, "Conflict"),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1ms."),
        500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
        503: ("server_error", None, "The engine is currently overloaded, please try again later"),
    }

    def error_body(self, status: int, message: str | None = None):
        type_, code, default = self._DEFAULTS.get(status, ("server_error" if status >= 500 else
                                                           "invalid_request_error", None, "Error"))
        headers = {}
        if status == 429:
            headers["retry-after"] = "0"
        if self.fast_retries and (status in (408, 409, 429) or status >= 500):
            headers["retry-after-ms"] = "1"
        return {"error": {"message": message or default, "type": type_, "param": None, "code": code}}, headers

    @staticmethod
    def _error(exc: ApiError) -> Response:
        return json_response({"error": {"message": exc.message, "type": exc.type, "param": exc.param,
                                        "code": exc.code}}, exc.status)

    # -- routing --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        try:
            self._check_auth(request)
            route = (request.method, request.path)
            if route == ("POST", "/v1/responses"):
                return json_response(self._responses(self._json_body(request)))
            if route == ("POST", "/v1/embeddings"):
                return json_response(self._embeddings(self._json_body(request)))
            if route == ("POST", "/v1/audio/transcriptions"):
                return self._transcriptions(request)
            if route == ("GET", "/v1/models"):
                return json_response({"object": "list", "data": [self._model(m) for m in self._model_ids()]})
            if request.method == "GET" and request.path.startswith("/v1/models/"):
                model = request.path.rsplit("/", 1)[1]
                if model not in self._model_ids():
                    raise ApiError(404, f"The model '{model}' does not exist", "model", "model_not_found")
                return json_response(self._model(model))
            raise ApiError(404, f"Invalid URL ({request.method} {request.path})")
        except ApiError as exc:
            return self._error(exc)

    def _check_auth(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header:
            raise ApiError(401, "You didn't provide an API key. You need to provide your API key in an "
                                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        key = header[7:] if header.startswith("Bearer ") else ""
        if key != self.api_key:
            masked = key[:3] + "*" * 8 + key[-4:] if len(key) > 8 else "***"
            raise ApiError(401, f"Incorrect API key provided: {masked}. You can find your API key at "
                                "https://platform.openai.com/account/api-keys.", None, "invalid_api_key")

    @staticmethod
    def _json_body(request: Request) -> dict:
        try:
            body = json.loads(request.get_data() or b"")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                                "aren't using your HTTP library correctly.)")
        return body

    def _model_ids(self) -> list[str]:
        with self._state_lock:
            return list(self.models)

    def _model(self, model_id: str) -> dict:
        with self._state_lock:
            shutdown_date = self.models.get(model_id)
        return {"id": model_id, "object": "model", "created": 1767225600, "owned_by": "system",
                "shutdown_date": shutdown_date}

    # -- /v1/responses --------------------------------------------------------------------------
    def _responses(self, body: dict) -> dict:
        for retired in ("prompt", "assistant_id"):
            if retired in body:
                raise ApiError(400, f"Unsupported parameter: '{retired}' (prompt templates and Assistants are "
                                    "shut down; send instructions and input instead).", retired, "unsupported_parameter")
        unknown = sorted(set(body) - RESPONSE_PARAMS)
        if unknown:
            raise ApiError(400, f"Unknown parameter: '{unknown[0]}'.", unknown[0], "unknown_parameter")
        if not body.get("model"):
            raise ApiError(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter")
        if body.get("stream"):
            raise ApiError(400, "stream=true is not emulated by OpenAIFake.", "stream", "unsupported_value")
        max_tokens = body.get("max_output_tokens")
        if max_tokens is not None and max_tokens < 16:
            raise ApiError(400, "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
                                f"but got {max_tokens} instead.", "max_output_tokens", "integer_below_min_value")
        tools = [self._check_tool(i, t) for i, t in enumerate(body.get("tools") or [])]
        items = self._check_input(body)
        previous = self._check_calls(body, items)
        last_user = next((_text_of(it.get("content")) for it in reversed(items) if it.get("role") == "user"),
                         self._last_user_text.get(previous or "", ""))

        script = self._next_script(body, last_user)
        with self._state_lock:
            injected = self._injected.popleft() if self._injected else []
        output = [_normalize_item(item, body) for item in [*injected, *script["items"]]]
        input_tokens, cached_tokens = self._prompt_cache(body)
        output_tokens = sum(estimate_tokens(_item_text(item)) for item in output)
        now = int(time.time())
        response = {
            "id": _id("resp"), "object": "response", "created_at": now, "status": script["status"],
            "background": False, "completed_at": now if script["status"] == "completed" else None,
            "error": None, "incomplete_details": script["incomplete_details"],
            "instructions": body.get("instructions"), "max_output_tokens": max_tokens, "max_tool_calls": None,
            "model": body["model"], "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": previous, "reasoning": {"effort": None, "summary": None},
            "service_tier": "default", "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
            "text": body.get("text", {"format": {"type": "text"}, "verbosity": "medium"}),
            "tool_choice": body.get("tool_choice", "auto"), "tools": tools, "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"), "user": None, "metadata": body.get("metadata", {}),
            "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
                      "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": input_tokens + output_tokens},
        }
        with self._state_lock:
            self.issued_call_ids.update(i["call_id"] for i in output if i.get("type") == "function_call")
            self._last_user_text[response["id"]] = last_user
            if body.get("store", True) is not False:
                self.responses[response["id"]] = response
        return response

    def _prompt_cache(self, body: dict) -> tuple[int, int]:
        """(input tokens, cached tokens) of a request, as OpenAI's prompt cache would count them."""
        prompt = "\n".join(json.dumps(body.get(part), ensure_ascii=False) for part in ("instructions", "tools", "input"))
        key = body.get("prompt_cache_key")
        with self._state_lock:
            earlier = self._cache.setdefault(key, deque(maxlen=CACHE_REQUESTS_PER_KEY))
            common = max((_common_prefix_length(prompt, seen) for seen in earlier), default=0)
            earlier.append(prompt)
            cached = common // 4  # whole tokens of the shared prefix (~4 characters per token)
            cached = cached - cached % CACHE_INCREMENT_TOKENS if cached >= CACHE_MIN_TOKENS else 0
            self.cache_hits.append((key, cached))
        return estimate_tokens(prompt), cached

    def _next_script(self, body: dict, last_user: str) -> dict:
        with self._state_lock:
            if self._script:
                return self._script.popleft()
        result = self._handler(body) if self._handler else f"[fake] {last_user}"
        items = result if isinstance(result, list) else [result]
        return {"items": items, "status": "completed", "incomplete_details": None}

    @staticmethod
    def _check_tool(index: int, tool: Any) -> dict:
        param = f"tools[{index}]"
        if not isinstance(tool, dict) or not tool.get("type"):
            raise ApiError(400, f"Missing required parameter: '{param}.type'.", f"{param}.type", "missing_required_parameter")
        if tool["type"] != "function":
            return tool
        for field in ("name", "parameters"):
            if field not in tool:
                raise ApiError(400, f"Missing required parameter: '{param}.{field}'.", f"{param}.{field}",
                               "missing_required_parameter")
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", str(tool["name"])):
            raise ApiError(400, f"Invalid '{param}.name': string does not match pattern. Expected a string that "
                                "matches the pattern '^[a-zA-Z0-9_-]+$'.", f"{param}.name", "invalid_value")
        issues = _strict_issues(tool["parameters"]) if tool["parameters"] is not None else []
        if tool.get("strict") is True and issues:
            raise ApiError(400, f"Invalid schema for function '{tool['name']}': {issues[0]}",
                           f"{param}.parameters", "invalid_function_parameters")
        # Omitted strict: the API makes the tool strict when the schema allows it.
        strict = tool.get("strict")
        return {"description": None, **tool, "strict": (not issues) if strict is None else strict}

    @staticmethod
    def _check_input(body: dict) -> list[dict]:
        if "input" not in body or body["input"] in (None, "", []):
            raise ApiError(400, "Missing required parameter: 'input'.", "input", "missing_required_parameter")
        raw = body["input"]
        if isinstance(raw, str):
            return [{"role": "user", "content": raw}]
        if not isinstance(raw, list):
            raise ApiError(400, "Invalid type for 'input': expected one of a string or array of input items, "
                                f"but got {type(raw).__name__} instead.", "input", "invalid_type")
        for i, item in enumerate(raw):
            param = f"input[{i}]"
            if not isinstance(item, dict):
                raise ApiError(400, f"Invalid type for '{param}': expected an object.", param, "invalid_type")
            kind = item.get("type", "message" if "role" in item else None)
            if kind is None:
                raise ApiError(400, f"Missing required parameter: '{param}.role'.", f"{param}.role",
                               "missing_required_parameter")
            if kind not in INPUT_ITEM_TYPES:
                raise ApiError(400, f"Invalid value: '{kind}'. Supported values are: "
                                    f"{', '.join(repr(t) for t in sorted(INPUT_ITEM_TYPES))}.",
                               f"{param}.type", "invalid_value")
            if kind == "reasoning" and body.get("store") is False and not item.get("encrypted_content"):
                raise ApiError(400, f"Item with id '{item.get('id')}' not found. Items are not persisted when "
                                    "`store` is set to false. Try again with `store` set to true, or remove this "
                                    "item from your input.", "input")
            if kind == "message":
                role = item.get("role")
                if role not in ("user", "assistant", "system", "developer"):
                    raise ApiError(400, f"Invalid value: '{role}'. Supported values are: 'assistant', 'system', "
                                        "'developer', and 'user'.", f"{param}.role", "invalid_value")
                if "content" not in item:
                    raise ApiError(400, f"Missing required parameter: '{param}.content'.", f"{param}.content",
                                   "missing_required_parameter")
                allowed = _ASSISTANT_PARTS if role == "assistant" else _USER_PARTS
                for j, part in enumerate(item["content"] if isinstance(item["content"], list) else []):
                    if not isinstance(part, dict) or part.get("type") not in allowed:
                        got = part.get("type") if isinstance(part, dict) else part
                        raise ApiError(400, f"Invalid value: '{got}'. Supported values are: "
                                            f"{', '.join(repr(a) for a in sorted(allowed))}.",
                                       f"{param}.content[{j}]", "invalid_value")
            elif kind == "function_call_output":
                if not item.get("call_id"):
                    raise ApiError(400, f"Missing required parameter: '{param}.call_id'.", f"{param}.call_id",
                                   "missing_required_parameter")
                if not isinstance(item.get("output"), (str, list)):
                    got = type(item.get("output")).__name__ if "output" in item else "nothing"
                    raise ApiError(400, f"Invalid type for '{param}.output': expected one of a string or array of "
                                        f"input content parts, but got {got} instead.", f"{param}.output", "invalid_type")
            elif kind == "function_call":
                for field in ("call_id", "name", "arguments"):
                    if field not in item:
                        raise ApiError(400, f"Missing required parameter: '{param}.{field}'.", f"{param}.{field}",
                                       "missing_required_parameter")
        return raw

    def _check_calls(self, body: dict, items: list[dict]) -> str | None:
        """Every tool output answers a call the model made, and every call gets its output."""
        previous = body.get("previous_response_id")
        calls: list[str] = []
        if previous:
            stored = self.responses.get(previous)
            if stored is None:
                raise ApiError(400, f"Previous response with id '{previous}' not found.", "previous_response_id",
                               "previous_response_not_found")
            calls += [i["call_id"] for i in stored["output"] if i.get("type") == "function_call"]
        calls += [i["call_id"] for i in items if i.get("type") == "function_call"]
        outputs = [i["call_id"] for i in items if i.get("type") == "function_call_output"]
        for call_id in outputs:
            if call_id not in calls or call_id not in self.issued_call_ids:
                raise ApiError(400, f"No tool call found for function call output with call_id {call_id}.", "input")
        for call_id in calls:
            if call_id not in outputs:
                raise ApiError(400, f"No tool output found for function call {call_id}.", "input")
        return previous

    # -- /v1/embeddings ------------------------------------------------------------------------
    def _embeddings(self, body: dict) -> dict:
        model = body.get("model")
        if not model:
            raise ApiError(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter")
        if model not in EMBEDDING_DIMS:
            raise ApiError(404, f"The model `{model}` does not exist or you do not have access to it.", None,
                           "model_not_found")
        raw = body.get("input")
        if raw is None:
            raise ApiError(400, "Missing required parameter: 'input'.", "input", "missing_required_parameter")
        texts = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else raw
        if not isinstance(texts, list) or not texts:
            raise ApiError(400, "'$.input' is invalid. Please check the API reference: "
                                "https://platform.openai.com/docs/api-reference.", "input")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ApiError(400, f"'$.input' is invalid: array too long. Expected an array with maximum length "
                                f"{MAX_EMBEDDING_INPUTS}, but got an array with length {len(texts)} instead.", "input")
        texts = [" ".join(map(str, t)) if isinstance(t, list) else t for t in texts]  # token arrays
        for text in texts:
            if not isinstance(text, str) or text == "":
                raise ApiError(400, "'$.input' is invalid. Please check the API reference: "
                                    "https://platform.openai.com/docs/api-reference.", "input")
            if estimate_tokens(text) > MAX_EMBEDDING_TOKENS:
                raise ApiError(400, f"This model's maximum context length is {MAX_EMBEDDING_TOKENS} tokens, however "
                                    f"you requested {estimate_tokens(text)} tokens in your input. Please reduce your "
                                    "input.", "input")
        full = EMBEDDING_DIMS[model]
        dims = body.get("dimensions", full)
        if "dimensions" in body and model == "text-embedding-ada-002":
            raise ApiError(400, "This model does not support specifying dimensions.", "dimensions")
        if not isinstance(dims, int) or not 1 <= dims <= full:
            raise ApiError(400, f"Invalid 'dimensions': expected an integer between 1 and {full}.", "dimensions")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise ApiError(400, f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.",
                           "encoding_format", "invalid_value")
        data = []
        for index, text in enumerate(texts):
            vector = embed(text, full)[:dims]  # shortened like text-embedding-3 does, then renormalised
            vector = (vector / (np.linalg.norm(vector) or 1.0)).astype("<f4")
            encoded = base64.b64encode(vector.tobytes()).decode() if fmt == "base64" else vector.tolist()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        with self._state_lock:
            self.embedded_inputs.extend(texts)
        tokens = sum(estimate_tokens(t) for t in texts)
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    # -- /v1/audio/transcriptions ----------------------------------------------------------------
    def _transcriptions(self, request: Request) -> Response:
        if request.mimetype != "multipart/form-data":
            raise ApiError(400, "Invalid Content-Type header (expected multipart/form-data).")
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "Missing required parameter: 'file'.", "file", "missing_required_parameter")
        model = request.form.get("model")
        if not model:
            raise ApiError(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter")
        content = upload.read()
        if len(content) > MAX_AUDIO_BYTES:
            raise ApiError(413, f"Maximum content size limit ({MAX_AUDIO_BYTES}) exceeded ({len(content)} bytes "
                                "read)", None, None, "server_error")
        extension = os.path.splitext(upload.filename or "")[1].lstrip(".").lower()
        if extension not in AUDIO_EXTENSIONS:
            raise ApiError(400, f"Invalid file format. Supported formats: {sorted(AUDIO_EXTENSIONS)}", "file",
                           "invalid_value")
        fmt = request.form.get("response_format", "json")
        allowed = {"json", "text"} if model.startswith("gpt-") else {"json", "text", "srt", "verbose_json", "vtt"}
        if fmt not in allowed:
            raise ApiError(400, f"response_format '{fmt}' is not compatible with model '{model}'. Use 'json' or "
                                "'text' instead.", "response_format", "unsupported_value")
        if self.validate_audio and decoded_seconds(content) < 0.1:
            raise ApiError(400, "Audio file might be corrupted or unsupported", "file", "invalid_value")
        text = self._transcriber(content) if self._transcriber else self.transcript_text
        if fmt == "text":
            return Response(text + "\n", content_type="text/plain; charset=utf-8")
        if fmt == "verbose_json":
            return json_response({"task": "transcribe", "language": request.form.get("language", "portuguese"),
                                  "duration": decoded_seconds(content), "text": text, "segments": []})
        if fmt in ("srt", "vtt"):
            return Response(f"1\n00:00:00,000 --> 00:00:02,000\n{text}\n", content_type="text/plain; charset=utf-8")
        usage = {"type": "tokens", "input_tokens": 50, "output_tokens": estimate_tokens(text)}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        return json_response({"text": text, "usage": usage})


def _common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix, by bisection on slice comparisons (C speed, not a
    character loop: the emulator runs under load benchmarks too)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


_decoded_cache: dict[bytes, float] = {}


def decoded_seconds(content: bytes) -> float:
    """Seconds of audio ffmpeg can decode from ``content`` (0 when it cannot decode any).
    Decoded from a file, not a pipe, so MP4/M4A with the index at the end still work."""
    key = hashlib.sha256(content).digest()
    if key not in _decoded_cache:
        with tempfile.NamedTemporaryFile() as f:
            f.write(content)
            f.flush()
            result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", f.name, "-f", "null", "-"],
                                    capture_output=True, timeout=60, check=False)
        times = re.findall(rb"time=(\d+):(\d+):(\d+(?:\.\d+)?)", result.stderr)
        seconds = 0.0
        if result.returncode == 0 and times:
            h, m, sec = times[-1]
            seconds = int(h) * 3600 + int(m) * 60 + float(sec)
        _decoded_cache[key] = seconds
    return _decoded_cache[key]
