"""Coverage-guided fuzzing (atheris, libFuzzer) of the file readers: every input must either load or raise
FrankenError; any other exception, a crash, a hang or a runaway allocation is a bug. The `bpe` target is
differential: the core's byte-level BPE against `tokenizers` on arbitrary text.

    python tests/fuzz/fuzz_readers.py --target gguf [libFuzzer options...] [corpus dirs...]

`tools/fuzz.py` runs this for a bounded time per target; tests/test_fuzz_corpus.py replays the corpus with
`run_one` (no atheris needed).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

# Scratch files live in memory where possible: the readers take paths (they map files), not bytes.
# tools/fuzz.py gives a folder it removes afterwards (libFuzzer exits without running Python's atexit).
_SCRATCH = Path(tempfile.mkdtemp(prefix="franken-fuzz-", dir=os.environ.get("FRANKEN_FUZZ_SCRATCH") or (
    "/dev/shm" if os.path.isdir("/dev/shm") else None)))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


def _file(name: str, data: bytes) -> Path:
    path = _SCRATCH / name
    path.write_bytes(data)
    return path


def _folder(files: dict[str, bytes]) -> Path:
    folder = _SCRATCH / "hf"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def fuzz_gguf_header(data: bytes) -> None:
    from franken_rt.checkpoint.gguf import read_header

    read_header(_file("x.gguf", data))


def fuzz_gguf(data: bytes) -> None:
    """The whole GGUF path: header, hyperparameters, tensor shapes, tokenizer, then the core's own checks and a
    forward pass over two tokens."""
    from franken_rt.checkpoint import read_checkpoint
    from franken_rt.model import Model

    ckpt = read_checkpoint(_file("m.gguf", data))
    ckpt.tokenizer.decode(ckpt.tokenizer.encode("the cat 12"))
    model = Model(ckpt, threads=1, n_ctx=min(8, ckpt.config.context_length))
    model.logits([0, min(1, ckpt.config.vocab_size - 1)])


def fuzz_safetensors(data: bytes) -> None:
    from franken_rt.checkpoint.safetensors import read_safetensors_header

    read_safetensors_header(_file("x.safetensors", data))


def fuzz_config(data: bytes) -> None:
    from franken_rt.checkpoint.hf import _load_json
    from franken_rt.config import ModelConfig
    from franken_rt.errors import FrankenError

    cfg = _load_json(_file("config.json", data))
    if not isinstance(cfg, dict):
        raise FrankenError("not an object")  # read_hf's own check
    ModelConfig.from_hf(cfg).inv_freq()


def fuzz_tokenizer_json(data: bytes) -> None:
    from franken_rt.tokenizer import Tokenizer

    config = json.dumps({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}).encode()
    tok = Tokenizer.from_hf_folder(_folder({"tokenizer.json": data, "tokenizer_config.json": config}))
    tok.decode(tok.encode("the cat <|im_end|> 12"))


def fuzz_tokenizer_model(data: bytes) -> None:
    from franken_rt.tokenizer import Tokenizer

    config = json.dumps({"add_bos_token": True, "legacy": False}).encode()
    tok = Tokenizer.from_hf_folder(_folder({"tokenizer.model": data, "tokenizer_config.json": config}))
    tok.decode(tok.encode("the cat <s> 12"))

@lru_cache(maxsize=1)
def _bpe_pair() -> tuple[Callable[[str], list[int]], Callable[[str], list[int]]]:
    """The core's byte-level BPE and `tokenizers` on the same small vocabulary (SmolLM's pre-tokenizer)."""
    if __package__:  # imported by the tests, as fuzz.fuzz_readers
        from .make_corpus import _bpe_vocab
    else:  # run as a script (tools/fuzz.py): its folder is first on sys.path
        from make_corpus import _bpe_vocab

    from franken_rt.tokenizer import byte_level

    tokens, types, merges = _bpe_vocab()
    vocab, added = byte_level._byte_level_vocab(tokens, types)
    return (byte_level._native_byte_level(vocab, merges, added, isolate_digits=True),
            byte_level._library_byte_level(vocab, merges, added, "digits+gpt2"))


def fuzz_bpe(data: bytes) -> None:
    """Differential: any text must give the core's byte-level BPE the ids `tokenizers` gives."""
    text = data.decode("utf-8", errors="replace")
    native, library = _bpe_pair()
    ids = native(text)
    assert ids == library(text), f"native BPE differs from tokenizers on {text!r}: {ids}"


TARGETS: dict[str, Callable[[bytes], None]] = {
    "gguf_header": fuzz_gguf_header,
    "gguf": fuzz_gguf,
    "safetensors": fuzz_safetensors,
    "config": fuzz_config,
    "tokenizer_json": fuzz_tokenizer_json,
    "tokenizer_model": fuzz_tokenizer_model,
    "bpe": fuzz_bpe,
}
# Which seed corpus each target starts from (tests/fuzz/corpus/<name>).
CORPUS_OF = {"gguf_header": "gguf", "gguf": "gguf", "safetensors": "safetensors", "config": "config",
             "tokenizer_json": "tokenizer_json", "tokenizer_model": "tokenizer_model", "bpe": "bpe"}


def run_one(target: str, data: bytes) -> None:
    """Run one input; FrankenError (a clean rejection) is swallowed, anything else propagates."""
    from franken_rt.errors import FrankenError

    try:
        TARGETS[target](data)
    except FrankenError:
        pass


def main() -> None:
    import atheris

    args = sys.argv[1:]
    if "--target" not in args:
        sys.exit(f"usage: {sys.argv[0]} --target {{{','.join(TARGETS)}}} [libFuzzer options] [corpus...]")
    i = args.index("--target")
    target = args[i + 1]
    del args[i:i + 2]
    # franken_rt comes from the environment (an installed package has the compiled core; the source tree may not)
    with atheris.instrument_imports(include=["franken_rt"]):
        import franken_rt.checkpoint  # noqa: F401
        import franken_rt.checkpoint.gguf  # noqa: F401
        import franken_rt.checkpoint.hf  # noqa: F401
        import franken_rt.checkpoint.safetensors  # noqa: F401
        import franken_rt.checkpoint.validate  # noqa: F401
        import franken_rt.config  # noqa: F401
        import franken_rt.model  # noqa: F401
        import franken_rt.tokenizer  # noqa: F401

    def one(data: bytes) -> None:
        run_one(target, data)

    atheris.Setup([sys.argv[0], *args], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
