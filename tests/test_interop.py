"""Interop with llama.cpp both ways: files franken-convert writes run in llama.cpp (llama-cpp-python) with the same
perplexity; files llama.cpp's own tools write run in franken-rt with the same numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import franken_rt
from franken_rt.checkpoint import read_checkpoint
from franken_rt.eval.corpus import pydoc_text
from franken_rt.eval.llamacpp import llamacpp_perplexity, llamacpp_quantize, source_dir
from franken_rt.eval.perplexity import perplexity
from franken_rt.eval.tiny_models import load_reference_precision, make_tiny_llama, reference_logits, reference_model
from franken_rt.formats import DType

pytestmark = pytest.mark.slow  # converts the demo model and runs llama.cpp on each file

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def float_demo(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model dequantized: the float original every format is made from."""
    out = tmp_path_factory.mktemp("float") / "smollm2-f32.gguf"
    subprocess.run([BIN / "franken-convert", smollm_gguf, "-o", out, "--quant", "f32", "-q"], check=True)
    return out


@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "iq4_nl"])
def test_our_files_run_in_llamacpp_with_same_perplexity(float_demo: Path, tmp_path: Path, quant: str) -> None:
    out = tmp_path / f"smollm2-{quant}.gguf"
    subprocess.run([BIN / "franken-convert", float_demo, "-o", out, "--quant", quant, "-q"], check=True)
    text = pydoc_text()[:60000]
    ours = perplexity(franken_rt.load(out, threads=2), text, ctx=512, max_windows=4)
    ids = franken_rt.load(out, threads=1).tokenize(text)
    theirs = llamacpp_perplexity(out, ids, ctx=512, max_windows=4)
    assert ours.tokens == theirs.tokens == 4 * 511
    assert abs(ours.ppl / theirs.ppl - 1) <= 0.01, (ours.ppl, theirs.ppl)


@pytest.mark.parametrize(("mix", "ftype", "types"), [
    ("Q4_K_M", 15, {DType.Q4_K, DType.Q6_K, DType.Q5_0}),
    ("Q5_K_M", 17, {DType.Q5_K, DType.Q6_K, DType.Q5_1}),
])
def test_llamacpp_k_quant_files_run_in_ours_with_same_perplexity(float_demo: Path, tmp_path: Path, mix: str,
                                                                 ftype: int, types: set[DType]) -> None:
    """The files people download: llama.cpp's _K_M mixes, made by its own quantizer. The demo model's 1536-wide
    rows (ffn_down) take the K-quants; its 576-wide rows are not whole 256-element superblocks, so llama.cpp falls
    back to Q5_0 (Q4_K_M) or Q5_1 (Q5_K_M) there: one file each covers all five read-only formats."""
    out = tmp_path / f"smollm2-{mix}.gguf"
    llamacpp_quantize(float_demo, out, ftype)
    assert types <= {t.dtype for t in read_checkpoint(out).tensors.values()}
    text = pydoc_text()[:60000]
    ours = perplexity(franken_rt.load(out, threads=2), text, ctx=512, max_windows=4)
    theirs = llamacpp_perplexity(out, franken_rt.load(out, threads=1).tokenize(text), ctx=512, max_windows=4)
    assert ours.tokens == theirs.tokens == 4 * 511
    assert abs(ours.ppl / theirs.ppl - 1) <= 0.005, (ours.ppl, theirs.ppl)


def test_llamacpp_files_run_in_ours(smollm_gguf: Path, tmp_path: Path, spm_model: Path) -> None:
    """The demo GGUF itself was written by llama.cpp's converter (see test_smollm2); here its converter script,
    from the llama.cpp sources, turns a tiny Hugging Face model into GGUF, and we match transformers on it."""
    folder = make_tiny_llama(tmp_path / "tiny", spm_model, "gqa_tied")
    out = tmp_path / "tiny-by-llamacpp.gguf"
    script = source_dir() / "convert_hf_to_gguf.py"
    env_path = str(source_dir() / "gguf-py")
    proc = subprocess.run([sys.executable, script, folder, "--outfile", out, "--outtype", "f32"],
                          capture_output=True, text=True, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    prompt = [1, 57, 300, 12, 99, 250, 7, 180, 33, 64]
    ours = load_reference_precision(out).logits(prompt)
    assert np.abs(ours - reference_logits(reference_model(folder), prompt)).max() <= 1e-4


def test_q4_conversion_is_small_and_fluent(float_demo: Path, tmp_path: Path) -> None:
    """The q4_0 mix (attn_v and ffn_down at Q8_0, as llama.cpp's _M mixes) is under 30% of the float file and
    its greedy continuation starts as the float model's. (Pure q4_0 loses +21% perplexity on this 135M model,
    docs/quality.md, and its continuation drifts from the second token.)"""
    out = tmp_path / "smollm2-q4_0m.gguf"
    subprocess.run([BIN / "franken-convert", float_demo, "-o", out, "--quant", "q4_0m", "-q"], check=True)
    assert out.stat().st_size <= 0.30 * float_demo.stat().st_size
    prompt = "The capital of France is"
    greedy = [list(franken_rt.load(p, threads=2).generate_tokens(prompt, max_tokens=8, temperature=0,
                                                                  ignore_eos=True)) for p in (float_demo, out)]
    assert greedy[1] == greedy[0]
