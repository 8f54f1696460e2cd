"""A scripted model server on 127.0.0.1 that the real agent programs talk to.

It speaks the three wire APIs the programs use, enough of each for a program to run a
whole turn against it:

- Anthropic Messages (Claude Code, Pi): ``POST /v1/messages`` as SSE or one JSON
  body, ``POST /v1/messages/count_tokens``.
- OpenAI Responses (Codex): ``POST /v1/responses`` as SSE, ``GET /v1/models``.
- Gemini (Gemini CLI): ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``,
  ``:generateContent``, ``:countTokens``, ``:embedContent``.

Every model request is recorded as a `ModelRequest`: the API, the raw body, ``text``
(everything the model would read in that request, so a test can assert that a string
reached the model), the names of the tools offered, and the tool results of the last
turn. What the model answers comes from the test's `Script`: a function from the
request to an `Action`, either `ToolCall` or `Say`. `reply` and `use_tool` make the
usual scripts one-liners.

Any other HTTP request is answered with an empty JSON object and recorded in `hits`,
so a test can see which side endpoints a program calls (`unhandled`).

The server runs its own event loop in a background thread, so a synchronous test can
start it, run a program as a subprocess and block on `ModelServer.wait_for`.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# Answered (as HTTP 400, which no program retries) when the test's script raises.
SCRIPT_FAILED = "the test's model script failed; see ModelServer.errors"

JsonObject = dict[str, Any]


class Api(enum.StrEnum):
    """The wire API a request came in on."""

    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    GEMINI = "gemini"


@dataclass(frozen=True)
class ToolResult:
    """One tool result the program sent back to the model.

    ``name`` is the tool's name as offered to the model; where the wire format only
    carries a call id it is found from the call earlier in the conversation ("" when
    that call is not in the request).
    """

    call_id: str
    name: str
    output: str


@dataclass(frozen=True)
class ModelRequest:
    """One request for a model turn, normalised across the three APIs."""

    index: int
    """Arrival order, from 0, over all model requests to this server."""
    api: Api
    path: str
    model: str
    stream: bool
    body: JsonObject
    text: str
    """All the text the model reads in this request, joined by newlines: system
    prompt, every message, tool calls' arguments and tool results. Tool definitions
    are not included; their names are in ``tools``."""
    tools: tuple[str, ...]
    """The names of the tools offered, in the order offered."""
    tool_results: tuple[ToolResult, ...]
    """Tool results sent after the model's latest tool calls, when the request ends
    with them (the request continues a turn); empty when the conversation ends with
    a user message."""
    last_user_text: str
    """The text of the latest user message that is not only tool results."""
    answer_schema: JsonObject | None = None
    """The JSON schema the answer must follow, when the request demands JSON (Gemini
    CLI's routing and next-speaker checks do)."""

    @property
    def main(self) -> bool:
        """True for the agent's own turn, which offers tools; side requests (titles,
        quota probes, classifiers, next-speaker checks) offer none."""
        return bool(self.tools)

    def tool(self, suffix: str) -> str | None:
        """The first offered tool named ``suffix`` or ending with ``_`` + ``suffix``
        (see `named`)."""
        return next((name for name in self.tools if named(name, suffix)), None)

    def result_of(self, suffix: str) -> ToolResult | None:
        """The last-turn result of the tool named by ``suffix`` (see `named`), if any."""
        return next((r for r in self.tool_results if named(r.name, suffix)), None)

    def summary(self) -> str:
        """One line describing the request, for failure messages."""
        tools = f"{len(self.tools)} tools" if self.tools else "no tools"
        results = f", results from {[r.name for r in self.tool_results]}" if self.tool_results else ""
        tail = self.last_user_text[-60:].replace("\n", " ")
        return f"#{self.index} {self.api} {self.path} model={self.model} {tools}{results} user=...{tail!r}"


def named(name: str, suffix: str) -> bool:
    """True when the tool ``name`` is ``suffix`` or ends with ``_`` + ``suffix``.

    Each program prefixes MCP tools its own way: ``get_messages`` from the server
    ``sessionmesh`` is ``mcp__sessionmesh__get_messages`` in Claude Code and Codex and
    ``mcp_sessionmesh_get_messages`` in Gemini CLI; all end with ``_get_messages``.
    The underscore keeps ``send`` from matching ``resend``.
    """
    return name == suffix or name.endswith("_" + suffix.lstrip("_"))


@dataclass(frozen=True)
class ToolCall:
    """Answer with a call of the tool ``name`` (as offered) with ``arguments``."""

    name: str
    arguments: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class Say:
    """Answer with final text, ending the turn."""

    text: str


Action = ToolCall | Say
Script = Callable[[ModelRequest], Action]
Answer = Callable[[web.Request, JsonObject], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Hit:
    """One HTTP request to the server, model request or not.

    The programs run with this server as their HTTP(S) proxy, so a request meant for
    another host arrives here too (as ``CONNECT host:443`` for HTTPS): ``outbound``.
    """

    method: str
    host: str
    """The Host header."""
    path: str
    """Path and query; for ``CONNECT``, ``host:port``."""
    known: bool
    """An endpoint the server models."""
    outbound: bool

    def __str__(self) -> str:
        target = f"{self.host}{self.path}" if self.outbound and self.method != "CONNECT" else self.path
        return f"{self.method} {target}"


def reply(text: str = "ok") -> Script:
    """A script that answers every request with ``text``."""

    def script(request: ModelRequest) -> Action:
        return Say(text)

    return script


def use_tool(
    suffix: str, arguments: JsonObject | None = None, *, then: str = "done", side: str = "ok"
) -> Script:
    """A script that makes the agent call one tool, then finish.

    A main request whose last turn has no result from the tool gets a call of the
    first offered tool named by ``suffix`` (see `named`: MCP tools carry a
    per-program prefix). Once that tool's result comes back the answer is ``then``.
    Side requests get ``side``.

    A main request that does not offer the tool is a scripting error: the program
    was not set up the way the test thinks, and the test should fail on that rather
    than on a timeout. It raises `LookupError`, which the server reports in `errors`.
    """
    args = dict(arguments or {})

    def script(request: ModelRequest) -> Action:
        if not request.main:
            return Say(side)
        if request.result_of(suffix) is not None:
            return Say(then)
        name = request.tool(suffix)
        if name is None:
            raise LookupError(f"no offered tool ends with {suffix!r}; offered: {list(request.tools)}")
        return ToolCall(name, args)

    return script


class ModelServer:
    """The scripted model server. Use as a context manager or `start`/`stop`.

    ``script`` may be replaced at any time; the next request uses the new one.
    """

    def __init__(self, script: Script | None = None) -> None:
        self.script: Script = script or reply()
        self._condition = threading.Condition()
        self._requests: list[ModelRequest] = []
        self._answers: dict[int, Action] = {}
        self._hits: list[Hit] = []
        self._errors: list[str] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> ModelServer:
        """Bind 127.0.0.1 on a free port and serve in a background thread.

        Raises `TimeoutError` when the server is not up within `START_TIMEOUT`.
        """
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # reported to start() below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="model-server", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise TimeoutError(f"model server did not start within {START_TIMEOUT}s")
        if failure:
            raise failure[0]
        return self

    async def _bind(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._dispatch])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        """Close every connection and end the server thread."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(STOP_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where programs point ----------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's root, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    # -- what arrived --------------------------------------------------------------------

    @property
    def requests(self) -> list[ModelRequest]:
        """The model requests so far, in arrival order (a copy)."""
        with self._condition:
            return list(self._requests)

    @property
    def hits(self) -> list[Hit]:
        """Every HTTP request so far, in arrival order (a copy)."""
        with self._condition:
            return list(self._hits)

    @property
    def unhandled(self) -> list[str]:
        """``"METHOD /path"`` of each request for this server to an endpoint it does
        not model."""
        return [str(h) for h in self.hits if not h.known and not h.outbound]

    @property
    def outbound(self) -> list[str]:
        """``"CONNECT host:port"`` or ``"METHOD host/path"`` of each request meant for
        another host, which came here because the programs' proxy is this server.
        Empty when a program kept off the network."""
        return [str(h) for h in self.hits if h.outbound]

    @property
    def errors(self) -> list[str]:
        """Scripts that raised and bodies that could not be read, as text."""
        with self._condition:
            return list(self._errors)

    def answer_to(self, request: ModelRequest) -> Action | None:
        """What the server answered ``request`` (None while the script runs)."""
        with self._condition:
            return self._answers.get(request.index)

    def wait_for(self, predicate: Callable[[ModelRequest], bool], timeout: float = 60.0) -> ModelRequest:
        """The first model request (already arrived or still to come) for which
        ``predicate`` is true.

        Raises `TimeoutError` after ``timeout`` seconds, listing the requests that did
        arrive, what they were answered, the unmodelled endpoints hit and script errors.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        with self._condition:
            while True:
                for request in self._requests[seen:]:
                    if predicate(request):
                        return request
                seen = len(self._requests)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(self._describe(f"no matching model request within {timeout}s"))
                self._condition.wait(left)

    def describe(self) -> str:
        """Everything the server saw, for a failure message."""
        with self._condition:
            return self._describe("model server log")

    def _describe(self, headline: str) -> str:
        lines = [headline + ";", f"{len(self._requests)} model requests:"]
        for request in self._requests:
            lines.append(f"  {request.summary()} -> {self._answers.get(request.index)!r}")
        unknown = [str(h) for h in self._hits if not h.known]
        if unknown:
            lines.append(f"other requests (not modelled, or outbound): {unknown}")
        if self._errors:
            lines.append("errors:")
            lines.extend("  " + e for e in self._errors)
        return "\n".join(lines)

    # -- serving -------------------------------------------------------------------------

    @web.middleware
    async def _dispatch(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every request, whatever its path or method (also ``CONNECT host:443``,
        which the router would refuse; its ``handler`` is unused): record it, then
        answer it."""
        path = request.path
        answer = self._route(request.method, path)
        with self._condition:
            connect = request.method == "CONNECT"
            host = request.headers.get("Host", request.host)
            outbound = connect or host not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}")
            target = request.raw_path if connect else request.path_qs
            self._hits.append(Hit(request.method, host, target, answer is not None, outbound))
            self._condition.notify_all()
        if request.method == "CONNECT":
            return web.Response(status=403, text="no network in tests")
        if answer is None:
            return web.json_response({})
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError as exc:
            self._record_error(f"{request.method} {path}: body is not JSON: {exc}")
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        return await answer(request, body)

    def _route(self, method: str, path: str) -> Answer | None:
        """The handler for a modelled endpoint; None for any other."""
        if method == "POST" and path.rstrip("/").endswith("/messages/count_tokens"):
            return self._anthropic_count
        if method == "POST" and path.rstrip("/").endswith("/messages"):
            return self._anthropic
        if method == "POST" and path.rstrip("/").endswith("/responses"):
            return self._openai
        if method == "GET" and path.rstrip("/").endswith("/models") and "/v1beta/" not in path:
            return self._openai_models
        if method == "POST" and ":" in path.rsplit("/", 1)[-1]:
            verb = path.rsplit(":", 1)[1]
            return {
                "streamGenerateContent": self._gemini,
                "generateContent": self._gemini,
                "countTokens": self._gemini_count,
                "embedContent": self._gemini_embed,
                "batchEmbedContents": self._gemini_embed,
            }.get(verb)
        return None

    def _record_error(self, text: str) -> None:
        with self._condition:
            self._errors.append(text)
            self._condition.notify_all()

    def _record(self, api: Api, path: str, body: JsonObject, conversation: _Conversation) -> ModelRequest:
        with self._condition:
            request = ModelRequest(
                index=len(self._requests),
                api=api,
                path=path,
                model=str(body.get("model", "")),
                stream=bool(body.get("stream", False)),
                body=body,
                text="\n".join(conversation.texts),
                tools=tuple(conversation.tools),
                tool_results=tuple(conversation.last_results()),
                last_user_text=conversation.last_user_text,
                answer_schema=_answer_schema(api, body),
            )
            self._requests.append(request)
            self._condition.notify_all()
        return request

    def _decide(self, request: ModelRequest) -> Action | None:
        """Run the script; None (and an entry in `errors`) when it raises."""
        try:
            action = self.script(request)
        except Exception:
            self._record_error(f"script failed on {request.summary()}:\n{traceback.format_exc()}")
            return None
        if isinstance(action, Say) and request.answer_schema is not None and not _is_json(action.text):
            # A program retries (or gives up on) a side check whose answer does not
            # parse; the smallest instance of its schema lets it go on.
            action = Say(json.dumps(_instance(request.answer_schema)))
        with self._condition:
            self._answers[request.index] = action
            self._condition.notify_all()
        return action

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    # -- Anthropic Messages ---------------------------------------------------------------

    async def _anthropic(self, request: web.Request, body: JsonObject) -> web.StreamResponse:
        req = self._record(Api.ANTHROPIC, request.path, body, _read_anthropic(body))
        action = self._decide(req)
        if action is None:
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error", "message": SCRIPT_FAILED}},
                status=400,
            )
        message_id = self._new_id("msg_mesh")
        if isinstance(action, ToolCall):
            block: JsonObject = {
                "type": "tool_use",
                "id": self._new_id("toolu_mesh"),
                "name": action.name,
                "input": action.arguments,
            }
            stop_reason = "tool_use"
        else:
            block = {"type": "text", "text": action.text}
            stop_reason = "end_turn"
        usage = {"input_tokens": _tokens(req.text), "output_tokens": 1}
        message: JsonObject = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": [block],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if not req.stream:
            return web.json_response(message)
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 0}}
        if block["type"] == "tool_use":
            opening: JsonObject = {**block, "input": {}}
            delta: JsonObject = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            opening = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        events: list[tuple[str, JsonObject]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": opening}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": 1},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return await _sse(request, ((name, data) for name, data in events))

    async def _anthropic_count(self, request: web.Request, body: JsonObject) -> web.StreamResponse:
        return web.json_response({"input_tokens": _tokens("\n".join(_read_anthropic(body).texts))})

    # -- OpenAI Responses -----------------------------------------------------------------

    async def _openai(self, request: web.Request, body: JsonObject) -> web.StreamResponse:
        req = self._record(Api.OPENAI, request.path, body, _read_openai(body))
        action = self._decide(req)
        if action is None:
            return web.json_response(
                {"error": {"type": "invalid_request_error", "message": SCRIPT_FAILED}}, status=400
            )
        response_id = self._new_id("resp_mesh")
        item_id = self._new_id("item_mesh")
        if isinstance(action, ToolCall):
            item = _openai_call_item(item_id, self._new_id("call_mesh"), action, body)
        else:
            item = {
                "type": "message",
                "id": item_id,
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": action.text, "annotations": []}],
            }
        tokens = _tokens(req.text)
        usage = {
            "input_tokens": tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 1,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens + 1,
        }
        response: JsonObject = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "model": req.model,
            "status": "in_progress",
            "output": [],
            "usage": None,
        }
        done = {**response, "status": "completed", "output": [item], "usage": usage}
        if not req.stream:
            return web.json_response(done)
        events: list[JsonObject] = [
            {"type": "response.created", "response": response},
            {"type": "response.in_progress", "response": response},
            {"type": "response.output_item.added", "output_index": 0, "item": _openai_opening(item)},
            *_openai_item_deltas(item),
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": done},
        ]
        numbered = ({**event, "sequence_number": n} for n, event in enumerate(events))
        return await _sse(request, ((event["type"], event) for event in numbered))

    async def _openai_models(self, request: web.Request, body: JsonObject) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [], "models": []})

    # -- Gemini -----------------------------------------------------------------------------

    async def _gemini(self, request: web.Request, body: JsonObject) -> web.StreamResponse:
        model = request.path.rsplit("/", 1)[-1].split(":", 1)[0]
        streaming = request.path.endswith(":streamGenerateContent")
        req = self._record(
            Api.GEMINI, request.path, {"model": model, "stream": streaming, **body}, _read_gemini(body)
        )
        action = self._decide(req)
        if action is None:
            return web.json_response(
                {"error": {"code": 400, "message": SCRIPT_FAILED, "status": "INVALID_ARGUMENT"}}, status=400
            )
        if isinstance(action, ToolCall):
            part: JsonObject = {"functionCall": {"name": action.name, "args": action.arguments}}
        else:
            part = {"text": action.text}
        tokens = _tokens(req.text)
        chunk = {
            "candidates": [
                {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": tokens,
                "candidatesTokenCount": 1,
                "totalTokenCount": tokens + 1,
            },
            "modelVersion": model,
            "responseId": self._new_id("gemini_mesh"),
        }
        if not streaming:
            return web.json_response(chunk)
        return await _sse(request, iter([(None, chunk)]))

    async def _gemini_count(self, request: web.Request, body: JsonObject) -> web.StreamResponse:
        inner = body.get("generateContentRequest", body)
        return web.json_response({"totalTokens": _tokens("\n".join(_read_gemini(inner).texts))})

    async def _gemini_embed(self, request: web.Request, body: JsonObject) -> web.StreamResponse:
        vector = {"values": [0.0] * 8}
        if "requests" in body:
            return web.json_response({"embeddings": [vector for _ in body["requests"]]})
        return web.json_response({"embedding": vector})


def _tokens(text: str) -> int:
    """A rough token count, so programs that show context use see plausible numbers."""
    return max(1, len(text) // 4)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _answer_schema(api: Api, body: JsonObject) -> JsonObject | None:
    """The JSON schema a request demands its answer follow, if any."""
    if api is Api.GEMINI:
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if schema is None and config.get("responseMimeType") == "application/json":
            schema = {}
    elif api is Api.OPENAI:
        form = (body.get("text") or {}).get("format") or {}
        schema = form.get("schema") if form.get("type") == "json_schema" else None
    else:
        form = body.get("output_format") or (body.get("output_config") or {}).get("format") or {}
        schema = form.get("schema") if form.get("type") == "json_schema" else None
    return schema if isinstance(schema, dict) else None


def _instance(schema: JsonObject) -> Any:
    """The smallest value that follows ``schema``: first enum value, first
    alternative, every property of an object, empty string and array, number 1."""
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _instance(schema[key][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        return {name: _instance(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return ""


async def _sse(request: web.Request, events: Iterable[tuple[str | None, JsonObject]]) -> web.StreamResponse:
    """Write ``events`` as one server-sent-event stream and end it."""
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        await response.write(f"{head}data: {json.dumps(data)}\n\n".encode())
    await response.write_eof()
    return response


# -- OpenAI Responses details ----------------------------------------------------------------


@dataclass(frozen=True)
class _OpenAiTool:
    """An offered tool. Codex groups tools in namespaces (its MCP tools are in
    ``mcp__<server>``); such a tool is listed as ``<namespace>__<name>``."""

    name: str
    kind: str
    namespace: str = ""
    inner: str = ""


def _openai_tools(tools: list[Any], namespace: str = "") -> Iterator[_OpenAiTool]:
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        kind = str(tool.get("type", "function"))
        name = str(tool.get("name", kind))
        if kind == "namespace":
            yield from _openai_tools(tool.get("tools") or [], name)
        elif namespace:
            yield _OpenAiTool(f"{namespace.rstrip('_')}__{name}", kind, namespace, name)
        else:
            yield _OpenAiTool(name, kind)


def _openai_call_item(item_id: str, call_id: str, action: ToolCall, body: JsonObject) -> JsonObject:
    """The output item that calls ``action``'s tool, shaped for the tool's type."""
    offered = {tool.name: tool for tool in _openai_tools(body.get("tools") or [])}
    tool = offered.get(action.name, _OpenAiTool(action.name, "function"))
    where = {"namespace": tool.namespace, "name": tool.inner} if tool.namespace else {"name": tool.name}
    if tool.kind == "custom":
        text = action.arguments.get("input", "")
        return {
            "type": "custom_tool_call",
            "id": item_id,
            "call_id": call_id,
            **where,
            "input": text if isinstance(text, str) else json.dumps(text),
            "status": "completed",
        }
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        **where,
        "arguments": json.dumps(action.arguments),
        "status": "completed",
    }


def _openai_opening(item: JsonObject) -> JsonObject:
    """``item`` as announced by ``output_item.added``: no content yet."""
    if item["type"] == "message":
        return {**item, "status": "in_progress", "content": []}
    if item["type"] == "function_call":
        return {**item, "status": "in_progress", "arguments": ""}
    return {**item, "status": "in_progress", "input": ""}


def _openai_item_deltas(item: JsonObject) -> list[JsonObject]:
    """The streamed events between an item's ``added`` and ``done``."""
    item_id = item["id"]
    if item["type"] == "message":
        part = item["content"][0]
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        return [
            {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
            {"type": "response.output_text.delta", **where, "delta": part["text"]},
            {"type": "response.output_text.done", **where, "text": part["text"]},
            {"type": "response.content_part.done", **where, "part": part},
        ]
    where = {"item_id": item_id, "output_index": 0}
    if item["type"] == "function_call":
        return [
            {"type": "response.function_call_arguments.delta", **where, "delta": item["arguments"]},
            {"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"]},
        ]
    return [
        {"type": "response.custom_tool_call_input.delta", **where, "delta": item["input"]},
        {"type": "response.custom_tool_call_input.done", **where, "input": item["input"]},
    ]


# -- reading requests ----------------------------------------------------------------------


@dataclass
class _Conversation:
    """What one request says, in wire-neutral terms, collected while reading it."""

    texts: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    call_names: dict[str, str] = field(default_factory=dict)
    trailing_results: list[ToolResult] = field(default_factory=list)
    last_user_text: str = ""

    def text(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.texts.append(value)

    def call(self, call_id: str, name: str, arguments: Any) -> None:
        """The model called a tool: a later result names it; a new turn starts."""
        self.call_names[call_id] = name
        self.text(arguments if isinstance(arguments, str) else json.dumps(arguments))
        self.trailing_results = []

    def result(self, call_id: str, output: str, name: str = "") -> None:
        self.text(output)
        self.trailing_results.append(ToolResult(call_id, name or self.call_names.get(call_id, ""), output))

    def user(self, text: str) -> None:
        """A user message that is not a tool result: the turn so far is over."""
        self.text(text)
        self.last_user_text = text
        self.trailing_results = []

    def last_results(self) -> list[ToolResult]:
        return list(self.trailing_results)


def _flatten(content: Any) -> str:
    """The text inside a content value: a string, or a list of text-bearing blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in (_flatten(part) for part in content) if t)
    if isinstance(content, dict):
        for key in ("text", "output", "content"):
            if key in content:
                return _flatten(content[key])
    return ""


def _read_anthropic(body: JsonObject) -> _Conversation:
    conv = _Conversation()
    conv.text(_flatten(body.get("system")))
    for message in body.get("messages") or []:
        role = message.get("role")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        texts: list[str] = []
        has_results = False
        for block in blocks:
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "tool_use":
                conv.call(str(block.get("id", "")), str(block.get("name", "")), block.get("input", {}))
            elif kind == "tool_result":
                has_results = True
                conv.result(str(block.get("tool_use_id", "")), _flatten(block.get("content")))
            elif kind == "thinking":
                conv.text(block.get("thinking"))
        joined = "\n".join(t for t in texts if t)
        if role == "user" and not has_results:
            conv.user(joined)
        else:
            # Text beside tool results (Claude Code's reminders) does not end the turn.
            conv.text(joined)
    for tool in body.get("tools") or []:
        if "name" in tool:
            conv.tools.append(str(tool["name"]))
    return conv


def _read_openai(body: JsonObject) -> _Conversation:
    conv = _Conversation()
    conv.text(body.get("instructions"))
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    for item in items or []:
        kind = item.get("type", "message")
        if kind == "message":
            text = _flatten(item.get("content"))
            if item.get("role") == "user":
                conv.user(text)
            else:
                conv.text(text)
        elif kind in ("function_call", "custom_tool_call"):
            arguments = item.get("arguments", item.get("input", ""))
            name = str(item.get("name", ""))
            if item.get("namespace"):
                name = f"{str(item['namespace']).rstrip('_')}__{name}"
            conv.call(str(item.get("call_id", "")), name, arguments)
        elif kind == "local_shell_call":
            conv.call(str(item.get("call_id", "")), "local_shell", item.get("action", {}))
        elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            conv.result(str(item.get("call_id", "")), _flatten(item.get("output")))
        elif kind == "reasoning":
            conv.text(_flatten(item.get("summary")))
    conv.tools.extend(tool.name for tool in _openai_tools(body.get("tools") or []))
    return conv


def _read_gemini(body: JsonObject) -> _Conversation:
    conv = _Conversation()
    conv.text(_flatten((body.get("systemInstruction") or {}).get("parts")))
    for content in body.get("contents") or []:
        texts: list[str] = []
        has_results = False
        for part in content.get("parts") or []:
            if "text" in part:
                texts.append(str(part["text"]))
            elif "functionCall" in part:
                call = part["functionCall"]
                name = str(call.get("name", ""))
                conv.call(str(call.get("id", name)), name, call.get("args", {}))
            elif "functionResponse" in part:
                has_results = True
                response = part["functionResponse"]
                name = str(response.get("name", ""))
                output = response.get("response", {})
                text = _flatten(output) or json.dumps(output)
                conv.result(str(response.get("id", name)), text, name)
        joined = "\n".join(t for t in texts if t)
        if content.get("role", "user") == "user" and not has_results:
            conv.user(joined)
        else:
            conv.text(joined)
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            conv.tools.append(str(declaration.get("name", "")))
    return conv
