"""The server's parts without HTTP: the engine's continuous batching on the demo model, and the request checks."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import uvicorn

import franken_rt
from franken_rt.sampling import SamplingParams, recommended_sampling
from franken_rt.serve import api
from franken_rt.serve.app import ServerOptions, make_app
from franken_rt.serve.engine import Engine, Job, QueueFull


class Collector:
    """A job's emits, in order, with the number of engine steps seen when each piece came."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.pieces, self.steps = engine, [], []
        self.done = threading.Event()

    def __call__(self, text: str, done: bool) -> None:
        if text:
            self.pieces.append(text)
            self.steps.append(self.engine.stats.steps)
        if done:
            self.done.set()


def job(prompt: list[int], collector: Collector, max_tokens: int, **kw) -> Job:  # noqa: ANN003
    return Job(prompt=prompt, params=SamplingParams(temperature=0, seed=1), max_tokens=max_tokens, emit=collector,
               **kw)


@pytest.fixture(scope="module")
def model(smollm_gguf: Path):  # noqa: ANN201
    return franken_rt.load(smollm_gguf, threads=2, n_ctx=1024, sequences=2)


def test_a_long_prompt_is_prefilled_in_chunks_beside_a_running_stream(model) -> None:  # noqa: ANN001
    reference = franken_rt.load(model.checkpoint.source, threads=2, n_ctx=1024)
    short = model.tokenize("The capital of France is")
    long = model.tokenize("Once upon a time, " * 120)  # ~600 tokens: ten 64-row passes
    want_short = "".join(reference.generate(short, max_tokens=40, temperature=0, ignore_eos=True))
    want_long = "".join(reference.generate(long, max_tokens=8, temperature=0, ignore_eos=True))
    engine = Engine(model)
    try:
        a, b = Collector(engine), Collector(engine)
        engine.submit(job(short, a, 40, ignore_eos=True))
        deadline = time.monotonic() + 60
        while not a.pieces:  # the short one is decoding when the long one arrives
            assert time.monotonic() < deadline and not a.done.is_set()
            time.sleep(0.001)
        engine.submit(job(long, b, 8, ignore_eos=True))
        assert a.done.wait(60) and b.done.wait(60)
        # The same text as alone (batch-invariant kernels, whatever the chunking), and the short stream kept flowing
        # while the long prompt was being read: it got tokens in the steps before the long one's first token.
        assert "".join(a.pieces) == want_short and "".join(b.pieces) == want_long
        assert sum(s < b.steps[0] for s in a.steps) >= len(long) // 64
        # A follow-up sharing the long prompt reuses its slot's cache: only the new tokens run.
        c = Collector(engine)
        follow = job(long + model.tokenize(" The end.", add_special=False), c, 2)
        engine.submit(follow)
        assert c.done.wait(60) and follow.cached_tokens >= len(long) - 1
    finally:
        engine.stop()


def test_lookup_drafts_beside_a_plain_stream(model) -> None:  # noqa: ANN001
    """A job with draft_max checks prompt-lookup drafts in the shared step: the same tokens as alone, fewer steps."""
    reference = franken_rt.load(model.checkpoint.source, threads=2, n_ctx=1024)
    quote = model.tokenize("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 1 2 3 4 5 6 7 8 9 10")
    plain = model.tokenize("The capital of France is")
    want_quote = "".join(reference.generate(quote, max_tokens=30, temperature=0, ignore_eos=True))
    want_plain = "".join(reference.generate(plain, max_tokens=30, temperature=0, ignore_eos=True))
    engine = Engine(model)
    try:
        a, b = Collector(engine), Collector(engine)
        drafting = job(quote, a, 30, ignore_eos=True, draft_max=8)
        engine.submit(drafting)
        engine.submit(job(plain, b, 30, ignore_eos=True))
        assert a.done.wait(60) and b.done.wait(60)
        assert "".join(a.pieces) == want_quote and "".join(b.pieces) == want_plain
        assert drafting.accepted_tokens > 10 and drafting.completion_tokens == 30
        assert len(set(a.steps)) < 25  # several tokens in some steps
    finally:
        engine.stop()


def test_queue_limit_and_cancellation(model) -> None:  # noqa: ANN001
    engine = Engine(model, queue_limit=1)
    try:
        running = [Collector(engine) for _ in range(3)]
        jobs = [job(model.tokenize(f"Count to {i}00:"), c, 500, ignore_eos=True) for i, c in enumerate(running)]
        for j in jobs:  # two slots and one place in the queue
            engine.submit(j)
        with pytest.raises(QueueFull):
            engine.submit(job([1, 2, 3], Collector(engine), 1))
        for j, c in zip(jobs, running):
            j.cancel()
            assert c.done.wait(30)
            assert j.finish_reason == "cancelled"
        assert engine.active() == 0
    finally:
        engine.stop()


def test_request_checks_and_defaults() -> None:
    # Left-out fields: the file's recommendation over OpenAI's defaults; the request over both.
    recommended = recommended_sampling({"general.sampling.temp": 0.2, "general.sampling.top_p": 0.9,
                                        "general.sampling.top_k": 50, "general.sampling.min_p": "x"})
    assert recommended == {"temperature": 0.2, "top_p": 0.9, "top_k": 50}
    assert recommended_sampling({"general.sampling.temp": -1.0}) == {}  # nonsense recommends nothing
    p = api.sampling({"seed": 3}, recommended)
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.seed) == (0.2, 0.9, 50, 0.0, 3)
    p = api.sampling({"temperature": 0.7, "unknown_field": [1]}, {})
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (0.7, 1.0, 0, 0.0)
    assert api.max_tokens({}, 16, 100) == 16 and api.max_tokens({"max_tokens": 500}, 16, 100) == 100
    assert api.max_tokens({"max_completion_tokens": 5, "max_tokens": 9}, 16, 100) == 5
    assert api.messages({"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"},
                                                                        {"type": "text", "text": "b"}]}]}) == [
        {"role": "system", "content": "ab"}]
    with pytest.raises(api.ApiError, match="'n'"):
        api.check_unsupported({"n": 3})
    api.check_unsupported({"n": 1, "logprobs": False, "response_format": {"type": "text"}})


def test_health_is_503_while_loading_and_cors_is_off_unless_asked(smollm_gguf: Path) -> None:
    """The application in-process on a free loopback port, with a model load held back until the test lets it go."""
    def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str]]:
        req = urllib.request.Request(url, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers)

    for cors in (None, "http://example.test"):
        release = threading.Event()

        def load(release: threading.Event = release):  # noqa: ANN202
            assert release.wait(30)
            return franken_rt.load(smollm_gguf, threads=1, n_ctx=64)

        app, state = make_app(load, ServerOptions(alias="m", parallel=1, cors_origin=cors))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server.started:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert get(url + "/health")[0] == 503  # listening, model still loading
            assert get(url + "/v1/models")[0] == 503
            preflight = get(url + "/v1/chat/completions", method="OPTIONS",
                            headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"})
            allowed = {k.lower(): v for k, v in preflight[1].items()}.get("access-control-allow-origin")
            assert allowed == cors  # no CORS header at all unless --cors-origin
            release.set()
            while get(url + "/health")[0] != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert get(url + "/v1/models")[0] == 200
        finally:
            release.set()
            server.should_exit = True
            thread.join(30)
            sock.close()
