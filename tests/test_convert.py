"""franken-convert: types per tensor, sizes, round-trip error bounds, atomic output; franken-eval's perplexity."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import franken_rt
from franken_rt.checkpoint import DType, read_checkpoint
from franken_rt.checkpoint.gguf import read_header
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.eval.tiny_models import make_tiny_llama, reference_logits, reference_model
from franken_rt.formats import FORMATS
from franken_rt.quant.formats import dequantize, encode
from franken_rt.quant.policy import MIXES, QUANT_NAMES
from franken_rt.quant.tensors import transcoder

BIN = Path(sys.executable).parent


def cli(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / name), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), spm_model, "gqa_tied")


@pytest.mark.parametrize(("dtype", "rounding"), [(DType.Q8_0, "rtn"), (DType.Q4_0, "rtn"), (DType.Q4_0, "search"),
                                                 (DType.Q4_1, "rtn"), (DType.Q4_1, "search"),
                                                 (DType.Q3_0, "rtn"), (DType.Q3_0, "search")])
def test_round_trip_error_within_format_bound(dtype: DType, rounding: str) -> None:
    x = np.random.default_rng(1).standard_t(4, size=(64, 256)).astype(np.float32)
    y = dequantize(encode(x, dtype, rounding), dtype, x.shape)
    blocks, err = x.reshape(-1, 32), np.abs(x - y).reshape(-1, 32)
    # round-to-nearest: half a step, plus the f16 rounding of the scale times the largest level
    if dtype == DType.Q8_0:
        step, qmax = np.abs(blocks).max(axis=1) / 127, 127
    elif dtype == DType.Q4_0:
        step, qmax = np.abs(blocks).max(axis=1) / 8, 8
    elif dtype == DType.Q3_0:
        step, qmax = np.abs(blocks).max(axis=1) / 4, 4
    else:
        step, qmax = (blocks.max(axis=1) - blocks.min(axis=1)) / 15, 15
    bound = step * (0.5 + qmax / 2048) + 1e-6
    if dtype in (DType.Q4_0, DType.Q3_0):
        bound = 2 * bound  # levels -8..7 (-4..3): the side opposite the extreme may clip by a whole step
    if rounding == "search":
        bound = 2 * bound  # a smaller scale may clip the extreme a little
    assert (err <= bound[:, None]).all()
    if rounding == "search":  # the search never does worse than round-to-nearest
        rtn = dequantize(encode(x, dtype, "rtn"), dtype, x.shape)
        assert ((x - y) ** 2).sum() < ((x - rtn) ** 2).sum()


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q3_0"])
def test_convert_types_sizes_and_logits(tiny: Path, tmp_path: Path, quant: str) -> None:
    out = tmp_path / f"tiny-{quant}.gguf"
    proc = cli("franken-convert", str(tiny), "-o", str(out), "--quant", quant)
    assert proc.returncode == 0, proc.stderr
    assert "MiB" in proc.stderr
    types = {t.name: t.dtype_id for t in read_header(out).tensors}
    base = DType[quant.upper()]
    assert types["blk.0.attn_q.weight"] == base and types["blk.2.ffn_down.weight"] == base
    assert types["blk.0.attn_norm.weight"] == DType.F32
    assert types["token_embd.weight"] == (DType.Q8_0 if quant.startswith(("q4", "q3", "iq4")) else base)
    ref = reference_logits(reference_model(tiny), list(range(1, 40)))
    ours = franken_rt.load(out, threads=2).logits(list(range(1, 40)))
    tol = {"f16": 0.01, "q8_0": 0.05, "q4_0": 0.5, "q4_1": 0.5, "iq4_nl": 0.5, "q3_0": 1.0}[quant]
    assert np.abs(ours - ref).max() <= tol * np.abs(ref).max()


def test_list_types_names_every_format_and_mix() -> None:
    proc = cli("franken-convert", "--list-types")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    read_only = {f.cli_name for f in FORMATS if not f.writable}
    assert set(lines) == {*QUANT_NAMES, *MIXES, *read_only} and "q4_k" in read_only
    assert all(lines[name].split()[2] == "reads" for name in read_only)


def test_tensor_type_override_and_bad_options(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "mix.gguf"
    proc = cli("franken-convert", str(tiny), "-o", str(out), "--quant", "q4_0", "--tensor-type", r"ffn_down=q8_0",
               "--tensor-type", "token_embd=f16")
    assert proc.returncode == 0, proc.stderr
    types = {t.name: t.dtype_id for t in read_header(out).tensors}
    assert types["blk.1.ffn_down.weight"] == DType.Q8_0 and types["blk.1.ffn_up.weight"] == DType.Q4_0
    assert types["token_embd.weight"] == DType.F16
    for bad in (["--tensor-type", "ffn_down"], ["--tensor-type", "x=q3_z"], ["--tensor-type", "(=q8_0"]):
        proc = cli("franken-convert", str(tiny), "-o", str(tmp_path / "bad.gguf"), *bad)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_never_overwrites_input_or_existing_output(tiny: Path, tmp_path: Path) -> None:
    src = tmp_path / "src.gguf"
    write_gguf(read_checkpoint(tiny), src)
    before = src.read_bytes()
    proc = cli("franken-convert", str(src), "-o", str(src), "--quant", "q8_0", "--force")
    assert proc.returncode == 2 and "input" in proc.stderr
    assert src.read_bytes() == before
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    proc = cli("franken-convert", str(src), "-o", str(out), "--quant", "q8_0")
    assert proc.returncode == 2 and "--force" in proc.stderr and out.read_bytes() == b"keep me"
    assert cli("franken-convert", str(src), "-o", str(out), "--quant", "q8_0", "--force").returncode == 0
    assert out.read_bytes()[:4] == b"GGUF"
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private mode


def test_failed_conversion_leaves_nothing(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial.gguf"
    calls = []

    def failing_policy(t):  # noqa: ANN001, ANN202
        calls.append(t.name)
        if len(calls) > 20:
            raise OSError(28, "No space left on device")  # as a full disk would, mid-write
        return DType.Q8_0 if len(t.shape) == 2 else DType.F32

    with pytest.raises(OSError):
        write_gguf(read_checkpoint(tiny), out, dtype=failing_policy, tensor_bytes=transcoder())
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_perplexity_matches_transformers(tiny: Path, tmp_path: Path) -> None:
    import torch

    from franken_rt.eval.corpus import pydoc_text

    text = pydoc_text()[:20000]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    proc = cli("franken-eval", str(tiny), "--ppl", str(corpus), "--ctx", "64", "--max-windows", "6",
               "--activations", "f32", "--kv-cache", "f32", "--json", str(tmp_path / "ppl.json"))
    assert proc.returncode == 0, proc.stderr
    import json

    got = json.loads((tmp_path / "ppl.json").read_text())
    assert got["tokens"] == 6 * 63 and got["windows"] == 6
    model = franken_rt.load(tiny)
    ids = model.tokenize(text)
    ref = reference_model(tiny)
    nll = []
    for w in range(6):
        window = ids[w * 64:(w + 1) * 64]
        logp = torch.log_softmax(torch.from_numpy(reference_logits(ref, window)), dim=-1)
        nll += [-float(logp[i, window[i + 1]]) for i in range(63)]
    assert math.isclose(got["ppl"], math.exp(np.mean(nll)), rel_tol=1e-4)
    assert 0 < got["stderr"] < got["ppl"]
    assert f"{got['ppl']:.4f}" in proc.stdout


def test_q3_0_layout_is_the_documented_one() -> None:
    """Codes j % 8 with scale 1: element j's low pair sits at bits 2*(j//8) of byte j % 8 and its high bit is bit j
    of the four qh bytes (csrc/kernels/formats.h), so the bytes are known in advance."""
    x = (np.arange(32) % 8 - 4).astype(np.float32)[None, :]
    raw = encode(x, DType.Q3_0, "rtn")[0]
    assert raw.shape == (14,)
    assert raw[:2].view("<f2")[0] == 1.0
    assert list(raw[2:6]) == [0xF0] * 4  # codes 4..7 have the high bit: bits 4-7 of every byte
    assert list(raw[6:14]) == [(i & 3) * 0b01010101 for i in range(8)]
    np.testing.assert_array_equal(dequantize(raw[None, :], DType.Q3_0, (32,)), x[0])


def test_q3_0m_mix_keeps_sensitive_tensors_at_q4_0(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny-q3_0m.gguf"
    proc = cli("franken-convert", str(tiny), "-o", str(out), "--quant", "q3_0m")
    assert proc.returncode == 0, proc.stderr
    types = {t.name: t.dtype_id for t in read_header(out).tensors}
    assert types["blk.1.ffn_down.weight"] == DType.Q4_0 and types["blk.1.attn_v.weight"] == DType.Q4_0
    assert types["blk.1.ffn_up.weight"] == DType.Q3_0 and types["token_embd.weight"] == DType.Q8_0
    ref = reference_logits(reference_model(tiny), list(range(1, 40)))
    ours = franken_rt.load(out, threads=2).logits(list(range(1, 40)))
    assert np.abs(ours - ref).max() <= 1.0 * np.abs(ref).max()


def test_a_text_prompt_that_writes_its_own_bos_gets_one(tiny: Path) -> None:
    """generate() on a chat template's text: the template's BOS, not a second one the tokenizer adds."""
    model = franken_rt.load(tiny, threads=1, n_ctx=64)
    bos = model.tokenizer.bos_id
    assert model.tokenize("<s>hello")[:2] == [bos, bos]  # what the plain tokenizer gives
    assert model.prompt_tokens("<s>hello") == model.tokenize("<s>hello")[1:]
    assert model.prompt_tokens("hello") == model.tokenize("hello")


def test_recommended_sampling_is_kept_through_conversion(tiny: Path, tmp_path: Path) -> None:
    """generation_config.json's sampling becomes llama.cpp's general.sampling.* keys, and generation defaults to it."""
    folder = tmp_path / "hf"
    shutil.copytree(tiny, folder)
    (folder / "generation_config.json").write_text('{"do_sample": true, "temperature": 0.3, "top_p": 0.85}')
    out = tmp_path / "out.gguf"
    assert cli("franken-convert", str(folder), "-o", str(out), "-q").returncode == 0
    meta = read_checkpoint(out).metadata
    assert meta["general.sampling.temp"] == pytest.approx(0.3) and meta["general.sampling.top_p"] == pytest.approx(0.85)
    for source in (folder, out):
        model = franken_rt.load(source, threads=1, n_ctx=64)
        assert model.recommended_sampling == pytest.approx({"temperature": 0.3, "top_p": 0.85})
