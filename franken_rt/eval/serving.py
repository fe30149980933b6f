"""A franken-serve (or llama-server) process for a test or a benchmark: started on a free loopback port, waited for,
always stopped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
    cmd = [sys.executable, "-m", "franken_rt.cli.serve", str(model), "--port", "0", "--threads", "2", *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    assert proc.stderr is not None
    server = Server(proc, "")
    try:
        line = proc.stderr.readline()
        server.log.append(line)
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert m, f"franken-serve did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}"
        server.url = m.group(1)
        threading.Thread(target=lambda: server.log.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
        deadline = time.monotonic() + START_TIMEOUT
        while not server.healthy():
            assert proc.poll() is None, f"franken-serve exited: {''.join(server.log)}"
            assert time.monotonic() < deadline, "franken-serve did not become healthy"
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
