"""A franken-serve (or llama-server) process for a test or a benchmark: started on a free loopback port, waited for,
always stopped."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from franken_rt.eval.memory import status_bytes

# The installed console script, not `python -m`: that puts the working directory first on sys.path, and from a
# source checkout it would import the sources (which have no built core) instead of the installed package.
SERVE = Path(sys.executable).parent / "franken-serve"
CLIENT_NICE = 10  # the load generator's threads, see drive()
START_TIMEOUT = 90.0  # seconds for the process to listen and load the model (a busy CI machine)


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    log: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, dict]:
        """(status, JSON body) of one plain HTTP request (for what the openai client cannot send)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, {"raw": raw.decode(errors="replace")}

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/health", timeout=5)[0] == 200
        except OSError:
            return False


@contextlib.contextmanager
def running_server(model: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """franken-serve on a port it picks itself (--port 0; its first line says which), 2 threads unless told."""
    cmd = [str(SERVE), str(model), "--port", "0",
           *(() if "--threads" in args else ("--threads", "2")), *args]
    with _process(cmd, env, first_line=True) as (proc, first_line):
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", first_line)
        assert m, f"franken-serve did not start: {first_line}"
        yield _healthy(Server(proc, m.group(1), [first_line]))


@contextlib.contextmanager
def llama_server(binary: Path, model: Path, parallel: int, ctx: int, threads: int = 2) -> Iterator[Server]:
    """llama.cpp's llama-server with `parallel` slots of `ctx` tokens each (its -c is the total)."""
    with socket.socket() as s:  # a free port (llama-server cannot report one it picked)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-np", str(parallel),
           "-c", str(ctx * parallel), "-t", str(threads), "-tb", str(threads), "--log-disable"]
    with _process(cmd, None, first_line=False) as (proc, _):
        yield _healthy(Server(proc, f"http://127.0.0.1:{port}"))


@contextlib.contextmanager
def _process(cmd: Sequence[str], env: dict[str, str] | None,
             first_line: bool) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The process, and its first line of stderr when asked for (a server that may print nothing is not waited
    for)."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    assert proc.stderr is not None
    try:
        yield proc, proc.stderr.readline() if first_line else ""
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _healthy(server: Server) -> Server:
    """Waits until /health answers 200 (the model is loaded); the process's further output goes to server.log."""
    stderr = server.proc.stderr
    threading.Thread(target=lambda: server.log.extend(stderr), daemon=True).start()  # type: ignore[arg-type]
    deadline = time.monotonic() + START_TIMEOUT
    while not server.healthy():
        assert server.proc.poll() is None, f"the server exited: {''.join(server.log)}"
        assert time.monotonic() < deadline, "the server did not become healthy"
        time.sleep(0.1)
    return server


def rss_mib(pid: int) -> float:
    """Resident memory of a process now (VmRSS), MiB."""
    return status_bytes("VmRSS", pid) / 2**20


# ---- client load: the same for every server --------------------------------------------------------------------

TOPICS = ["the sea", "a robot", "the moon", "a small town", "winter", "a river", "an old map", "the desert",
          "a library", "a storm", "a garden", "a train", "a lighthouse", "a mountain", "a market", "a forest"]


@dataclass
class Load:
    streams: int
    tokens: int        # completion tokens, all requests
    seconds: float     # wall time from the first request to the last answer
    ttft: list[float]  # per request: seconds to its first generated text

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def ttft_median(self) -> float:
        return statistics.median(self.ttft)


def _lower_priority() -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, CLIENT_NICE)


def drive(url: str, streams: int, requests: int = 2, max_tokens: int = 64, api_key: str = "none") -> Load:
    """`streams` clients at once, each sending `requests` streamed completions one after another (distinct prompts,
    end-of-sequence ignored so each makes exactly max_tokens). The client is deliberately thin (http.client and
    json, no SDK): it shares the 2 cores with the server it measures, and parsing each chunk into an SDK's objects
    would take time from whichever server is being measured. The tests use the `openai` client itself."""
    host, port = url.removeprefix("http://").split(":")

    def one(i: int) -> tuple[int, float]:
        body = {"model": "m", "prompt": f"Write a short story about {TOPICS[i % len(TOPICS)]}.", "stream": True,
                "max_tokens": max_tokens, "temperature": 0.8, "seed": i, "ignore_eos": True,
                "stream_options": {"include_usage": True}}
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        t0 = time.perf_counter()
        first, tokens, pieces = 0.0, 0, 0
        try:
            conn.request("POST", "/v1/completions", body=json.dumps(body),
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"{url}: {response.status} {response.read()[:300]!r}")
            for line in response:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                event = json.loads(line[6:])
                if event.get("choices") and event["choices"][0].get("text"):
                    pieces += 1
                    first = first or time.perf_counter() - t0
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
        finally:
            conn.close()
        return tokens or pieces, first

    def client_loop(c: int) -> list[tuple[int, float]]:
        return [one(c * requests + r) for r in range(requests)]

    t0 = time.perf_counter()
    # The client threads run at a lower priority (Linux's nice is per thread): a real server's clients are on other
    # machines, so their JSON parsing should take from whichever server is measured only cores it leaves idle.
    with concurrent.futures.ThreadPoolExecutor(streams, initializer=_lower_priority) as pool:
        results = [r for rs in pool.map(client_loop, range(streams)) for r in rs]
    seconds = time.perf_counter() - t0
    return Load(streams, sum(t for t, _ in results), seconds, [f for _, f in results])
