"""franken-serve against the real `openai` client: every test starts its own server on a free loopback port and
stops it. Greedy answers are compared with the same model run in this process, one request at a time."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")  # the serve and test extras install it; a developer without them skips

import franken_rt  # noqa: E402
from franken_rt.eval.serving import SERVE, running_server  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Who wrote Hamlet?",
    "Explain what a CPU does in one sentence.",
    "Say hello in Spanish.",
    "What is 12 times 12?",
    "Name a color of the rainbow.",
]
MAX = 24


@pytest.fixture(scope="module")
def reference(smollm_gguf: Path) -> franken_rt.model.Model:  # type: ignore[name-defined]
    return franken_rt.load(smollm_gguf, threads=2)


def greedy(model, prompt: str, max_tokens: int = MAX) -> tuple[str, int]:  # noqa: ANN001
    text = "".join(model.generate(model.chat_prompt([{"role": "user", "content": prompt}]), max_tokens=max_tokens,
                                  temperature=0))
    return text, model.last_stats.generated_tokens


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, timeout=60, max_retries=0)


def chat(c: openai.OpenAI, prompt: str, **kw):  # noqa: ANN201
    return c.chat.completions.create(model="any", messages=[{"role": "user", "content": prompt}], temperature=0,
                                     max_tokens=kw.pop("max_tokens", MAX), **kw)


def test_chat_and_completions_match_the_model_run_alone(smollm_gguf: Path, reference) -> None:  # noqa: ANN001
    with running_server(smollm_gguf, "--alias", "smol") as server:
        c = client(server.url)
        assert [m.id for m in c.models.list().data] == ["smol"]
        want, n = greedy(reference, PROMPTS[0])
        r = chat(c, PROMPTS[0])
        assert r.choices[0].message.content == want
        assert r.choices[0].finish_reason == ("length" if n == MAX else "stop")
        assert r.usage.completion_tokens == n
        text = reference.chat_prompt([{"role": "user", "content": PROMPTS[0]}])
        assert isinstance(text, str) and r.usage.prompt_tokens == len(reference.prompt_tokens(text))
        assert r.usage.total_tokens == r.usage.prompt_tokens + n
        assert r.model == "smol"

        # Streaming: the same text in pieces, a role chunk first, the finish reason last, then the usage.
        chunks = list(chat(c, PROMPTS[0], stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == want
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == r.choices[0].finish_reason
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == n

        # Completions, plain and streamed; the same tokens as generate() on the raw prompt.
        text = "".join(reference.generate("Once upon a time", max_tokens=12, temperature=0))
        r2 = c.completions.create(model="smol", prompt="Once upon a time", max_tokens=12, temperature=0)
        assert r2.choices[0].text == text and r2.usage.completion_tokens == reference.last_stats.generated_tokens
        streamed = c.completions.create(model="smol", prompt="Once upon a time", max_tokens=12, temperature=0,
                                        stream=True)
        assert "".join(ch.choices[0].text for ch in streamed) == text

        # A stop string cuts the text before it and finishes with "stop".
        stop = text.split()[2]
        r3 = c.completions.create(model="smol", prompt="Once upon a time", max_tokens=12, temperature=0, stop=[stop])
        assert r3.choices[0].text == text[: text.index(stop)] and r3.choices[0].finish_reason == "stop"

        # Tokenize / detokenize, llama-server's shapes.
        status, body = server.request("POST", "/tokenize", {"content": "Hello world"})
        assert status == 200 and body["tokens"] == reference.tokenize("Hello world", add_special=False)
        status, body = server.request("POST", "/detokenize", {"tokens": body["tokens"]})
        assert status == 200 and body["content"] == "Hello world"


def test_eight_clients_at_once_get_their_sequential_answers(smollm_gguf: Path, reference) -> None:  # noqa: ANN001
    want = [greedy(reference, p)[0] for p in PROMPTS]
    with running_server(smollm_gguf, "--parallel", "4") as server:  # 8 clients, 4 slots: half of them wait
        c = client(server.url)
        with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
            got = list(pool.map(lambda p: chat(c, p).choices[0].message.content, PROMPTS))
        assert got == want
        # Speculative decoding by prompt lookup: the same answers, beside plain streams and each other.
        drafted = [{"draft": "lookup"} if i % 2 else {"draft": "lookup", "draft_max": 3} for i in range(len(PROMPTS))]
        quote = "Repeat exactly: the old map shows the river, the bridge and the mill by the river."
        with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
            got = list(pool.map(lambda pe: chat(c, pe[0], extra_body=pe[1]).choices[0].message.content,
                                zip([quote, *PROMPTS[1:]], drafted)))
        assert got == [greedy(reference, quote)[0], *want[1:]]
        # A follow-up sharing the first request's prompt reuses its slot's cache.
        r = c.chat.completions.create(model="any", temperature=0, max_tokens=4, messages=[
            {"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": want[0]},
            {"role": "user", "content": "And of Spain?"}])
        assert r.usage.prompt_tokens_details.cached_tokens > 20


def test_a_dropped_client_frees_its_slot(smollm_gguf: Path) -> None:
    with running_server(smollm_gguf, "--parallel", "1", "--queue", "0") as server:
        c = client(server.url)
        stream = c.chat.completions.create(model="any", messages=[{"role": "user", "content": "Tell a long story."}],
                                           max_tokens=4000, stream=True, extra_body={"ignore_eos": True})
        for i, _ in enumerate(stream):
            if i == 3:
                break
        # While the stream runs, the one slot is busy and nothing may wait: another request is refused at once.
        status, body = server.request("POST", "/v1/chat/completions",
                                      {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert status == 503 and body["error"]["code"] == "server_busy"
        stream.close()  # the client goes away mid-stream (4000 tokens would take far longer than this test waits)
        deadline = time.monotonic() + 20
        while True:
            status, body = server.request("POST", "/v1/chat/completions",
                                          {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200, body
        assert body["usage"]["completion_tokens"] <= 2


BAD_REQUESTS = [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    ({}, 400),
    ({"messages": []}, 400),
    ({"messages": "hi"}, 400),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400),
    ({"messages": [{"role": "user", "content": 5}]}, 400),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "seed": "x"}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": 7}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 1}, 400),
    ({"messages": [{"role": "user", "content": "word " * 3000}]}, 400),  # longer than a slot's context
]


def test_malformed_requests_get_4xx_and_the_server_keeps_serving(smollm_gguf: Path) -> None:
    with running_server(smollm_gguf, "--ctx", "512") as server:
        for body, status in BAD_REQUESTS:
            got, answer = server.request("POST", "/v1/chat/completions", body)
            assert got == status, (body if not isinstance(body, dict) or len(str(body)) < 200 else "long", answer)
            assert answer["error"]["message"], answer
        for path, body in (("/v1/completions", {"prompt": ""}), ("/v1/completions", {"prompt": [1, -5]}),
                           ("/v1/completions", {"prompt": ["a", "b"]}),
                           ("/v1/completions", {"prompt": "a", "echo": True}),
                           ("/v1/completions", {"prompt": "a", "draft": "self"}),
                           ("/v1/completions", {"prompt": "a", "draft": "lookup", "draft_max": 0}),
                           ("/v1/completions", {"prompt": "a", "draft_max": 4}),
                           ("/tokenize", {"content": 5}), ("/detokenize", {"tokens": [10**9]}),
                           ("/detokenize", {"tokens": "abc"})):
            got, answer = server.request("POST", path, body)
            assert got == 400 and answer["error"]["message"], (path, body, answer)
        # A body over the limit is refused from its declared length, before it is read.
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 2000000\r\n\r\n{")
            head = b""
            while b'"error"' not in head and len(head) < 4096:
                more = s.recv(4096)
                if not more:
                    break
                head += more
            head = head.decode()
        assert head.startswith("HTTP/1.1 413") and '"error"' in head, head
        assert server.request("GET", "/v1/nothing")[0] == 404
        assert server.request("GET", "/v1/chat/completions")[0] == 405
        # A client that sends half a body and hangs up costs nothing either.
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"messages\": [")
        assert server.healthy()
        r = chat(client(server.url), "Say hi.", max_tokens=3)
        assert r.usage.completion_tokens >= 1 and server.proc.poll() is None


def test_api_key(smollm_gguf: Path) -> None:
    with running_server(smollm_gguf, env={"FRANKEN_API_KEY": "s3cret"}) as server:
        assert server.request("GET", "/health")[0] == 200  # health needs no key
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/tokenize")):
                status, body = server.request(method, path, {"content": "x"} if method == "POST" else None,
                                              headers=headers)
                assert status == 401 and body["error"]["code"] == "invalid_api_key", (path, headers)
        with pytest.raises(openai.AuthenticationError):
            chat(client(server.url, "wrong"), "hi")
        assert chat(client(server.url, "s3cret"), "hi", max_tokens=2).usage.completion_tokens >= 1


def test_sigterm_lets_running_requests_finish(smollm_gguf: Path) -> None:
    with running_server(smollm_gguf, "--drain-timeout", "30") as server:
        c = client(server.url)
        stream = chat(c, "Count from one to twenty.", stream=True, max_tokens=40, extra_body={"ignore_eos": True})
        first = next(iter(stream))
        server.proc.send_signal(signal.SIGTERM)
        rest = list(stream)  # the running stream ends normally, all its tokens
        assert first.choices[0].delta.role == "assistant"
        assert rest[-1].choices[0].finish_reason == "length"
        assert server.proc.wait(timeout=30) == 0
        with pytest.raises(OSError):  # and it listens no more
            host, port = server.url.removeprefix("http://").split(":")
            socket.create_connection((host, int(port)), timeout=2).close()


def test_options_refused_with_one_line(smollm_gguf: Path, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SERVE), *args], capture_output=True, text=True, timeout=60)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args in ((str(tmp_path / "missing.gguf"),), (str(smollm_gguf), "--parallel", "0"),
                     (str(smollm_gguf), "--port", "70000"), (str(smollm_gguf), "--port", port),
                     (str(smollm_gguf), "--ctx", "100000")):
            p = run(*args)
            assert p.returncode == 2, (args, p.stderr)
            lines = [ln for ln in p.stderr.splitlines() if "error" in ln]
            assert len(lines) == 1 and "Traceback" not in p.stderr, (args, p.stderr)


def test_cpus_and_max_memory(smollm_gguf: Path, reference) -> None:  # noqa: ANN001
    from franken_rt.resources import allowed_cpus, runtime_bytes

    c = reference.config
    weights = sum(t.nbytes for t in reference.checkpoint.tensors.values())
    budget = weights + runtime_bytes(c, c.n_layers, 2048, "f16", 1, sequences=2) - 1  # two f16 slots do not fit
    cpu = allowed_cpus()[-1]
    with running_server(smollm_gguf, "--parallel", "2", "--threads", "1", "--cpus", str(cpu), "--max-memory",
                        str(budget)) as server:
        deadline = time.monotonic() + 10  # the line is printed before /health turns 200, read by another thread
        while "--max-memory" not in "".join(server.log) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "--max-memory: context 2048 tokens, q8 KV cache" in "".join(server.log)
        want, _ = greedy(reference, PROMPTS[3])
        assert chat(client(server.url), PROMPTS[3]).choices[0].message.content == want
        assert [cpu] in thread_affinities(server.proc.pid)  # the thread that runs the model


def thread_affinities(pid: int) -> list[list[int]]:
    """The CPU list of each of a process's threads (one that exits meanwhile is left out)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.append(sorted(os.sched_getaffinity(int(task.name))))
        except ProcessLookupError:
            continue
    return out
