"""The HTTP face of the engine, on Starlette: OpenAI's endpoints, /health, /tokenize, /detokenize and the chat page.

The model loads on a background thread after the server starts listening, so /health can answer 503 while it does.
Every endpoint answers errors in OpenAI's JSON shape; a bad request never touches another client's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from franken_rt.errors import FrankenError
from franken_rt.model import Model
from franken_rt.sampling import recommended_sampling
from franken_rt.serve import api
from franken_rt.serve.api import ApiError, Generation
from franken_rt.serve.engine import Engine, Job, QueueFull


@dataclass
class ServerOptions:
    alias: str
    parallel: int = 4
    queue: int = 64
    api_key: str | None = None
    cors_origin: str | None = None
    max_body: int = 1 << 20


class Outbox:
    """Pieces of text on their way from the engine thread to the handlers' queues, handed over to the event loop
    once per engine step (one wake-up of the loop for all streams, not one per piece)."""

    def __init__(self) -> None:
        self.items: collections.deque[tuple[asyncio.Queue[tuple[str, bool]], str, bool]] = collections.deque()
        self.loop: asyncio.AbstractEventLoop | None = None

    def emitter(self, queue: asyncio.Queue[tuple[str, bool]]) -> Callable[[str, bool], None]:
        return lambda text, done: self.items.append((queue, text, done))

    def flush(self) -> None:  # engine thread
        if self.items and self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
                self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:  # event loop
        while self.items:
            queue, text, done = self.items.popleft()
            queue.put_nowait((text, done))


@dataclass
class ServerState:
    options: ServerOptions
    model: Model | None = None
    engine: Engine | None = None
    defaults: dict[str, float | int] = field(default_factory=dict)
    load_error: str = ""
    outbox: Outbox = field(default_factory=Outbox)
    created: int = field(default_factory=lambda: int(time.time()))
    on_load_error: Callable[[], None] | None = None


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


# ---- request plumbing --------------------------------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object: 413 past `limit` bytes (before reading it all), 400 if it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise api.bad("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise api.bad("the request body must be a JSON object")
    return body


async def wait_disconnect(request: Request) -> None:
    """Returns when the client goes away (after the body has been read, the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


Handler = Callable[[Request, ServerState], Awaitable[Response]]


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(state: ServerState, handler: Handler, needs_model: bool = True) -> Endpoint:
    """The checks every API endpoint shares (API key, model loaded) and the translation of errors to JSON."""

    async def run(request: Request) -> Response:
        try:
            key = state.options.api_key
            if key is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                    raise ApiError(401, "missing or incorrect API key (send 'Authorization: Bearer KEY')",
                                   type_="authentication_error", code="invalid_api_key")
            if needs_model and state.engine is None:
                raise ApiError(503, "the model is still loading" if not state.load_error else state.load_error,
                               type_="server_error", code="model_loading")
            return await handler(request, state)
        except ApiError as e:
            return error_response(e)
        except FrankenError as e:  # a user mistake the model found (a chat template's refusal, say)
            return error_response(api.bad(str(e)))

    return run


# ---- generation --------------------------------------------------------------------------------------------------


def _generation(body: dict[str, Any], state: ServerState, ids: list[int], default_max: int | None) -> Generation:
    model = state.model
    assert model is not None
    if len(ids) >= model.n_ctx:
        raise ApiError(400, f"the prompt has {len(ids)} tokens; a slot's context holds {model.n_ctx}",
                       param="messages", code="context_length_exceeded")
    room = model.n_ctx - len(ids)
    stream, include_usage = api.stream_settings(body)
    ignore_eos = api.boolean(body, "ignore_eos")
    return Generation(
        prompt=ids, params=api.sampling(body, state.defaults),
        max_tokens=api.max_tokens(body, room if default_max is None else default_max, room),
        stops=api.stops(body), stream=stream, include_usage=include_usage, ignore_eos=ignore_eos,
        draft_max=api.draft(body),
    )


def _submit(state: ServerState, gen: Generation) -> tuple[Job, asyncio.Queue[tuple[str, bool]]]:
    queue: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
    job = Job(prompt=gen.prompt, params=gen.params, max_tokens=gen.max_tokens, emit=state.outbox.emitter(queue),
              stops=gen.stops, ignore_eos=gen.ignore_eos, draft_max=gen.draft_max)
    assert state.engine is not None
    try:
        state.engine.submit(job)
    except QueueFull as e:
        raise ApiError(503, str(e), type_="server_error", code="server_busy") from None
    return job, queue


def _usage(job: Job) -> dict[str, int]:
    prompt = len(job.prompt)
    return {"prompt_tokens": prompt, "completion_tokens": job.completion_tokens,
            "total_tokens": prompt + job.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": job.cached_tokens}}  # type: ignore[dict-item]


def _failed(job: Job) -> ApiError:
    return ApiError(500, f"generation failed: {job.error or job.finish_reason}", type_="server_error")


async def _respond(request: Request, state: ServerState, gen: Generation, chat: bool) -> Response:
    job, queue = _submit(state, gen)
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    created, name = int(time.time()), state.options.alias
    if gen.stream:
        return StreamingResponse(_events(job, queue, rid, created, name, chat, gen.include_usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    pieces: list[str] = []

    async def collect() -> None:
        while True:
            text, done = await queue.get()
            pieces.append(text)
            if done:
                return

    collector, watcher = asyncio.ensure_future(collect()), asyncio.ensure_future(wait_disconnect(request))
    try:
        await asyncio.wait({collector, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not collector.done():  # the client went away (or the server is stopping): free the slot
            job.cancel()
            collector.cancel()
    if not collector.done() or collector.cancelled():
        return Response(status_code=499)
    if job.finish_reason not in ("stop", "length"):
        raise _failed(job)
    text = "".join(pieces)
    if chat:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                                  "finish_reason": job.finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": job.finish_reason}
    return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                         "model": name, "system_fingerprint": None, "choices": [choice], "usage": _usage(job)})


async def _events(job: Job, queue: asyncio.Queue[tuple[str, bool]], rid: str, created: int, name: str, chat: bool,
                  include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, then `data: [DONE]`. Cancelled with the response when the
    client disconnects; the job is then cancelled too."""

    def chunk(delta: str | None, finish: str | None, first: bool = False) -> str:
        if chat:
            d: dict[str, Any] = {} if delta is None else {"content": delta}
            if first:
                d = {"role": "assistant", "content": ""}
            choice: dict[str, Any] = {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
        out: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                               "created": created, "model": name, "system_fingerprint": None, "choices": [choice]}
        if include_usage:
            out["usage"] = None
        return f"data: {json.dumps(out)}\n\n"

    # The text chunks, the bulk of a stream, from a template rendered once: on a 2-core device every microsecond
    # the event loop spends per token is taken from the matrix products running beside it.
    head, tail = chunk("\0", None).split(json.dumps("\0"))

    def text_chunk(piece: str) -> str:
        return head + json.dumps(piece) + tail

    try:
        if chat:
            yield chunk(None, None, first=True)
        done = False
        while not done:
            text, done = await queue.get()
            events = [text_chunk(text)] if text else []
            while not done and not queue.empty():  # pieces that arrived meanwhile go out in one write
                text, done = queue.get_nowait()
                if text:
                    events.append(text_chunk(text))
            if events:
                yield "".join(events)
        if job.finish_reason not in ("stop", "length"):
            yield f"data: {json.dumps(_failed(job).body())}\n\n"
        else:
            yield chunk(None, job.finish_reason)
            if include_usage:
                last = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                        "created": created, "model": name, "system_fingerprint": None, "choices": [],
                        "usage": _usage(job)}
                yield f"data: {json.dumps(last)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # a no-op when it has finished; frees the slot when the client left mid-stream


async def chat_completions(request: Request, state: ServerState) -> Response:
    body = await read_json(request, state.options.max_body)
    api.check_unsupported(body)
    messages = api.messages(body)
    assert state.model is not None
    ids = state.model.prompt_tokens(state.model.chat_prompt(messages))
    return await _respond(request, state, _generation(body, state, ids, None), chat=True)


async def completions(request: Request, state: ServerState) -> Response:
    body = await read_json(request, state.options.max_body)
    api.check_unsupported(body)
    assert state.model is not None
    prompt = api.completion_prompt(body, state.model.config.vocab_size)
    ids = state.model.prompt_tokens(prompt) if isinstance(prompt, str) else prompt
    return await _respond(request, state, _generation(body, state, ids, api.COMPLETIONS_MAX_TOKENS), chat=False)


# ---- the other endpoints -----------------------------------------------------------------------------------------


async def models(request: Request, state: ServerState) -> Response:
    return JSONResponse({"object": "list", "data": [
        {"id": state.options.alias, "object": "model", "created": state.created, "owned_by": "franken-rt"}]})


async def tokenize(request: Request, state: ServerState) -> Response:
    body = await read_json(request, state.options.max_body)
    content = body.get("content")
    if not isinstance(content, str):
        raise api.bad("'content' must be a string", "content")
    add_special = api.boolean(body, "add_special")
    assert state.model is not None
    return JSONResponse({"tokens": state.model.tokenize(content, add_special=add_special)})


async def detokenize(request: Request, state: ServerState) -> Response:
    body = await read_json(request, state.options.max_body)
    tokens = body.get("tokens")
    assert state.model is not None
    vocab = state.model.config.vocab_size
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise api.bad("'tokens' must be a list of token ids", "tokens")
    if not all(0 <= t < vocab for t in tokens):
        raise api.bad("'tokens' holds an id outside the vocabulary", "tokens")
    return JSONResponse({"content": state.model.detokenize(tokens)})


def make_app(load: Callable[[], Model], options: ServerOptions) -> tuple[Starlette, ServerState]:
    """The application; `load` runs on a background thread once the server has started."""
    state = ServerState(options)
    # The engine thread wants the GIL back after every pass through the core; by default a thread waits up to 5 ms
    # for the event loop to let go of it, as long as a decode step. 0.5 ms keeps the handover short.
    sys.setswitchinterval(0.0005)

    def load_in_background() -> None:
        try:
            model = load()
            state.defaults = recommended_sampling(model.checkpoint.metadata)
            state.model = model
            state.engine = Engine(model, queue_limit=options.queue, after_step=state.outbox.flush)
        except FrankenError as e:
            state.load_error = str(e)
            if state.on_load_error:
                state.on_load_error()
        except Exception as e:  # noqa: BLE001 (reported, then the server stops: it can serve nothing)
            state.load_error = f"loading the model failed: {e}"
            if state.on_load_error:
                state.on_load_error()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.outbox.loop = asyncio.get_running_loop()
        threading.Thread(target=load_in_background, name="franken-load", daemon=True).start()
        yield
        if state.engine is not None:
            state.engine.stop()

    async def health(request: Request) -> Response:
        if state.engine is None:
            return JSONResponse({"status": "error" if state.load_error else "loading",
                                 **({"error": state.load_error} if state.load_error else {})}, status_code=503)
        st = state.engine.stats
        return JSONResponse({"status": "ok", "slots": len(state.engine.slots), "busy": state.engine.active(),
                             "steps": st.steps, "rows": st.rows, "generated": st.generated,
                             "core_seconds": round(st.busy_seconds, 3)})

    page = resources.files("franken_rt.serve").joinpath("page.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else None
        return error_response(ApiError(exc.status_code, str(exc.detail), code=kind))

    async def server_error(request: Request, exc: Exception) -> Response:
        print(f"franken-serve: internal error: {exc!r}", file=sys.stderr)
        return error_response(ApiError(500, "internal server error", type_="server_error"))

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", endpoint(state, models), methods=["GET"]),
        Route("/v1/chat/completions", endpoint(state, chat_completions), methods=["POST"]),
        Route("/v1/completions", endpoint(state, completions), methods=["POST"]),
        Route("/tokenize", endpoint(state, tokenize), methods=["POST"]),
        Route("/detokenize", endpoint(state, detokenize), methods=["POST"]),
    ]
    middleware = []
    if options.cors_origin:
        middleware.append(Middleware(CORSMiddleware, allow_origins=[options.cors_origin], allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    return app, state
