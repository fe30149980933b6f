"""The runtime path imports no numpy (over 10 MiB of resident memory that no generation needs), nor `tokenizers` for a
GPT-2-style vocabulary: loading a GGUF file and generating, the speed benchmark and franken-run, each in a fresh
interpreter that imports the package this test imported (the source tree in development, the installed package in
CI, whose checkout has no built core). Also what made that
possible: GGUF metadata arrays read without numpy, and the GGUF tokenizer's keys read from the file again when a
conversion asks, rather than kept in memory."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from fuzz.make_corpus import tiny_gguf

import franken_rt
from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf import _ARRAY_CODES, _SCALARS, read_header
from franken_rt.errors import FrankenError

# Where the franken_rt this process runs was imported from: the child must import the same one.
PACKAGE_ROOT = Path(franken_rt.__file__).resolve().parent.parent
# numpy (over 10 MiB), and `tokenizers` (~15 MiB with a vocabulary) for GPT-2-style vocabularies, which the core
# encodes.
REPORT = (
    "\nimport sys\nprint('tokenizers loaded:', 'tokenizers' in sys.modules)\n"
    "print('numpy loaded:', 'numpy' in sys.modules)\n"
)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny GGUF models, one per tokenizer engine (sentencepiece; the core's byte-level BPE for SmolLM's
    pre-tokenizer): each engine is imported."""
    path = tmp_path_factory.mktemp("runtime") / f"tiny-{request.param}.gguf"
    tiny_gguf(path, tokenizer=request.param, quant="q4_1", tied=False)
    return path


def run_python(code: str, *args: str, cwd: Path) -> list[str]:
    """Lines `code` prints, run by this Python with this process's franken_rt first on its path; asserts that it
    imported neither numpy nor `tokenizers`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code + REPORT, *args], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "numpy loaded: False"
    assert lines[-2] == "tokenizers loaded: False"
    return lines[:-2]


def test_load_and_generate(model_file: Path, tmp_path: Path) -> None:
    code = (
        "import sys, franken_rt\n"
        "model = franken_rt.load(sys.argv[1])\n"
        "list(model.generate('Hello', max_tokens=4, seed=1, ignore_eos=True))\n"
        "print(model.last_stats.generated_tokens)\n"
    )
    lines = run_python(code, str(model_file), cwd=tmp_path)
    assert lines[-1] == "4"


def test_speed_benchmark(model_file: Path, tmp_path: Path) -> None:
    code = (
        "import runpy, sys\n"
        "sys.argv = ['speed', sys.argv[1], '-t', '1', '-p', '8', '-n', '4', '-r', '1']\n"
        "try:\n"
        "    runpy.run_module('franken_rt.eval.speed', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
    )
    lines = run_python(code, str(model_file), cwd=tmp_path)
    assert '"engine": "franken-rt"' in lines[-1]


def test_franken_run(model_file: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from franken_rt.cli.run import main\n"
        "assert main([sys.argv[1], '-p', 'Hello', '-n', '4', '--seed', '1']) == 0\n"
    )
    run_python(code, str(model_file), cwd=tmp_path)


def test_array_codes_match_the_gguf_sizes() -> None:
    for etype, code in _ARRAY_CODES.items():
        assert array(code).itemsize == _SCALARS[etype][1], (etype, code)


def test_metadata_arrays_of_every_type(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    values = {
        "u8": ([0, 7, 255] * 30, gguf.GGUFValueType.UINT8),
        "i8": ([-128, 0, 127] * 30, gguf.GGUFValueType.INT8),
        "u16": ([0, 65535] * 40, gguf.GGUFValueType.UINT16),
        "i16": ([-32768, 32767] * 40, gguf.GGUFValueType.INT16),
        "u32": ([0, 2**32 - 1] * 40, gguf.GGUFValueType.UINT32),
        "i32": ([-(2**31), 2**31 - 1] * 40, gguf.GGUFValueType.INT32),
        "u64": ([0, 2**64 - 1] * 40, gguf.GGUFValueType.UINT64),
        "i64": ([-(2**63), 2**63 - 1] * 40, gguf.GGUFValueType.INT64),
        "f32": ([float(np.float32(0.1)), -2.5, float("inf")] * 30, gguf.GGUFValueType.FLOAT32),
        "f64": ([0.1, -1e300, float("-inf")] * 30, gguf.GGUFValueType.FLOAT64),
        "bool": ([True, False, False] * 30, gguf.GGUFValueType.BOOL),
    }
    path = tmp_path / "arrays.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    for key, (items, vtype) in values.items():
        w.add_key_value(key, items, gguf.GGUFValueType.ARRAY, sub_type=vtype)
    w.add_tensor("t", np.zeros(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    meta = read_header(path).metadata
    for key, (items, _) in values.items():
        assert meta[key] == items, key
        assert [type(x) for x in meta[key]] == [type(x) for x in items], key


def test_gguf_tokenizer_keys_come_from_the_file(model_file: Path) -> None:
    """gguf_metadata() reads the tokenizer.* keys from the file again (the same as read_header gives), and refuses a
    file that changed since the model was loaded."""
    ckpt = read_checkpoint(model_file)
    expected = {k: v for k, v in read_header(model_file).metadata.items() if k.startswith("tokenizer.")}
    assert ckpt.tokenizer.gguf_metadata() == expected
    st = model_file.stat()
    try:
        os.utime(model_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        with pytest.raises(FrankenError, match="has changed since the model was loaded"):
            ckpt.tokenizer.gguf_metadata()
    finally:
        os.utime(model_file, ns=(st.st_atime_ns, st.st_mtime_ns))


# ---- by structure ---------------------------------------------------------------------------------------------------

# The modules a generation runs: franken_rt.load, the model, the readers and tokenizer, franken-run, the speed
# benchmark. What they import at module level (TYPE_CHECKING blocks aside), followed through franken_rt, must not
# reach a heavy library: those are imported only inside the functions that need them (optional extras), or by
# modules off this path (the converter, surgery/, the analysis APIs' callers).
RUNTIME_MODULES = ("franken_rt", "franken_rt.model", "franken_rt.checkpoint", "franken_rt.cli.run",
                   "franken_rt.eval.speed")
HEAVY = {"numpy", "torch", "transformers", "tokenizers", "sentencepiece", "gguf", "jinja2", "tqdm", "matplotlib"}


def _module_file(name: str) -> Path | None:
    """The source file of a franken_rt module (None for the compiled core or a name that is not a module)."""
    base = PACKAGE_ROOT.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _top_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported: module-level statements (inside if/try too), not functions,
    classes or `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)  # a submodule, if it is one
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(part)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def test_runtime_modules_import_no_heavy_library_at_module_level() -> None:
    imported_by: dict[str, str] = {}
    todo = [(name, "") for name in RUNTIME_MODULES]
    while todo:
        name, parent = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            prefix = ".".join(parts[:i])
            if prefix in imported_by:
                continue
            if parts[0] != "franken_rt":
                imported_by[prefix] = parent
                continue
            path = _module_file(prefix)
            if path is None:
                continue
            imported_by[prefix] = parent
            todo.extend((m, prefix) for m in _top_level_imports(path))
    heavy = {m: by for m, by in imported_by.items() if m.split(".")[0] in HEAVY}
    assert not heavy, f"imported at module level on the runtime path (module: by): {heavy}"
    assert "franken_rt.tokenizer" in imported_by and "franken_rt.checkpoint.gguf" in imported_by  # the walk works
