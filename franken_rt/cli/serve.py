"""franken-serve MODEL: an OpenAI-compatible HTTP server (chat, completions, a chat page) on loopback by default."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from franken_rt.cli import ArgumentParser, user_errors
from franken_rt.errors import FrankenError
from franken_rt.model import KV_CACHE_TYPES

MiB = 1 << 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="franken-serve", description="Serve a model over OpenAI's HTTP API, with a chat page.")
    ap.add_argument("model", help="GGUF file or Hugging Face model folder")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    ap.add_argument("--parallel", "-np", type=int, default=4,
                    help="slots: streams decoded together, each with its own KV cache (default 4)")
    ap.add_argument("--ctx", "-c", type=int, default=None, help="context per slot in tokens (default min(model, 2048))")
    ap.add_argument("--queue", type=int, default=64,
                    help="requests that may wait for a slot; more get 503 at once (default 64)")
    ap.add_argument("--api-key", default=os.environ.get("FRANKEN_API_KEY"),
                    help="require 'Authorization: Bearer KEY' on every endpoint but /health and the page "
                         "(default: $FRANKEN_API_KEY, else none)")
    ap.add_argument("--alias", default=None, help="model name in /v1/models and responses (default: the file's name)")
    ap.add_argument("--threads", "-t", type=int, default=None,
                    help="threads (default: physical cores, among --cpus if given)")
    ap.add_argument("--cpus", default=None, metavar="LIST", help="pin the threads to these CPUs, e.g. 4-7")
    ap.add_argument("--max-memory", default=None, metavar="SIZE",
                    help="memory for weights + every slot's KV cache + buffers, e.g. 1G: picks the context and KV "
                         "cache type that fit (an explicit --ctx/--kv-cache is kept, refused if too big)")
    ap.add_argument("--kv-cache", default=None, choices=list(KV_CACHE_TYPES), help="KV cache storage (default f16)")
    ap.add_argument("--kernels", default="", help="force a kernel path: scalar, avx2, ... (default: best)")
    ap.add_argument("--cors-origin", default=None, help="allow browser pages from this origin (default: CORS off)")
    ap.add_argument("--drain-timeout", type=float, default=30.0,
                    help="on SIGTERM, seconds that running requests may take to finish (default 30)")
    ap.add_argument("--max-body", type=int, default=1, help="largest request body in MiB (default 1)")
    return ap.parse_args(argv)


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvicorn

        from franken_rt.serve.app import ServerOptions, make_app
    except ImportError as e:
        raise FrankenError(f"franken-serve needs the serve extra: pip install 'franken-rt[serve]' ({e.name} is "
                           "missing)") from None
    for name, value, lo, hi in (("--port", args.port, 0, 65535), ("--parallel", args.parallel, 1, 64),
                                ("--queue", args.queue, 0, 1 << 16), ("--max-body", args.max_body, 1, 1024)):
        if not lo <= value <= hi:
            raise FrankenError(f"{name} must be between {lo} and {hi}, got {value}")
    if not args.drain_timeout >= 0:
        raise FrankenError(f"--drain-timeout must be >= 0, got {args.drain_timeout}")
    if args.api_key is not None and not args.api_key:
        raise FrankenError("--api-key is empty")

    from franken_rt.checkpoint import read_checkpoint
    from franken_rt.model import Model

    ckpt = read_checkpoint(args.model)  # a wrong path or a bad file fails here, before the server starts
    # The options the model checks itself (threads, context, memory for every slot's cache) are checked on the
    # loading thread; a mistake there stops the server with the same one-line message.
    alias = args.alias or Path(args.model).name

    def load() -> Model:
        model = Model(ckpt, threads=args.threads, n_ctx=args.ctx, kernels=args.kernels, kv_cache=args.kv_cache,
                      sequences=args.parallel, cpus=args.cpus, max_memory=args.max_memory)
        if model.memory_plan is not None:
            print(f"franken-serve: --max-memory: {model.memory_plan.describe()}", file=sys.stderr, flush=True)
        return model

    options = ServerOptions(alias=alias, parallel=args.parallel, queue=args.queue, api_key=args.api_key,
                            cors_origin=args.cors_origin, max_body=args.max_body * MiB)
    app, state = make_app(load, options)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=args.drain_timeout, lifespan="on")
    server = uvicorn.Server(config)
    sock = listen(args.host, args.port)

    def stop_on_load_error() -> None:
        server.should_exit = True

    state.on_load_error = stop_on_load_error
    port = sock.getsockname()[1]  # --port 0 takes a free port: this line says which
    print(f"franken-serve: {alias} on http://{args.host}:{port} ({args.parallel} slots; /health answers 200 once "
          "the model is loaded)", file=sys.stderr, flush=True)
    # The server drains on SIGTERM and then raises the signal again for the handler it found: a no-op handler makes
    # a drained stop exit 0 rather than die of the signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    with sock:
        server.run(sockets=[sock])
    if state.load_error:
        raise FrankenError(state.load_error)
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a port in use is one clear message rather than the server's log."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise FrankenError(f"--host {host}: {e}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise FrankenError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


if __name__ == "__main__":
    sys.exit(main())
