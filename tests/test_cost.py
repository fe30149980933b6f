"""The cost model against hand-counted tiny configurations and against the bytes of written GGUF files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from franken_rt.checkpoint import Checkpoint, TensorInfo, read_checkpoint
from franken_rt.checkpoint.gguf import read_header
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.checkpoint.types import DType
from franken_rt.config import ModelConfig
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import make_tiny_llama
from franken_rt.quant.policy import QuantPolicy
from franken_rt.quant.tensors import transcoder
from franken_rt.surgery.cost import cost
from franken_rt.surgery.plan import apply_plan

# dim 64, 4 heads of 16, 2 KV heads, FFN 160, vocab 400, 3 blocks, tied embeddings. Per block:
#   q 64x64 = 4096, k 32x64 = 2048, v 2048, o 4096, gate/up/down 3 x 160x64 = 30720  -> 43008 matrix weights
#   + 2 norms of 64                                                                 -> 43136 parameters
# embedding 400x64 = 25600, final norm 64.
BLOCK_MATRIX, BLOCK_PARAMS, EMBD = 43008, 43136, 25600


# `python -c` puts the working directory first on sys.path: run from one without a franken_rt folder, so the
# installed package (with its compiled core) is what runs, as the entry point would.
NEUTRAL = Path(sys.executable).parent


def synthetic(n_layers: int = 3, tied: bool = True, dtype: DType = DType.F32) -> Checkpoint:
    """A checkpoint of shapes only (no file behind it): enough for the cost model."""
    cfg = ModelConfig(n_layers=n_layers, dim=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=160, vocab_size=400,
                      context_length=256, norm_eps=1e-5, rope_theta=10000.0, tie_embeddings=tied)
    shapes = {"token_embd.weight": (400, 64), "output_norm.weight": (64,)}
    if not tied:
        shapes["output.weight"] = (400, 64)
    for b in range(n_layers):
        shapes.update({
            f"blk.{b}.attn_norm.weight": (64,), f"blk.{b}.ffn_norm.weight": (64,),
            f"blk.{b}.attn_q.weight": (64, 64), f"blk.{b}.attn_k.weight": (32, 64),
            f"blk.{b}.attn_v.weight": (32, 64), f"blk.{b}.attn_output.weight": (64, 64),
            f"blk.{b}.ffn_gate.weight": (160, 64), f"blk.{b}.ffn_up.weight": (160, 64),
            f"blk.{b}.ffn_down.weight": (64, 160),
        })
    tensors = {n: TensorInfo(n, Path("none"), 0, dtype if len(s) == 2 else DType.F32, s) for n, s in shapes.items()}
    return Checkpoint(config=cfg, tensors=tensors, tokenizer=None, rope_interleaved=True,  # type: ignore[arg-type]
                      source=Path("synthetic"))


def test_hand_counted_float() -> None:
    c = cost(synthetic())
    assert c.depth == 3 and c.stored_blocks == 3
    assert c.params == 3 * BLOCK_PARAMS + EMBD + 64 == 155072
    assert c.disk_bytes == 4 * c.params
    # blocks + one embedding row + the (tied) output matrix + the final norm
    assert c.read_bytes == 4 * (3 * BLOCK_PARAMS + 64 + EMBD + 64)
    assert c.kv_bytes_per_token == 3 * 2 * 32 * 2  # f16 keys and values of 2 heads x 16 per block
    assert c.matmul_macs == 3 * BLOCK_MATRIX + EMBD
    assert c.attention_macs_per_position == 3 * 2 * 4 * 16  # q.k and weights x v for 4 heads of 16
    assert c.macs(100) == 3 * BLOCK_MATRIX + EMBD + 100 * 384
    assert c.mean_macs(3) == 3 * BLOCK_MATRIX + EMBD + 384 * (1 + 2 + 3) / 3
    assert cost(synthetic(), kv_cache="f32").kv_bytes_per_token == 3 * 2 * 32 * 4
    assert cost(synthetic(), kv_cache="q8").kv_bytes_per_token == 3 * 2 * 34


def test_hand_counted_quantized_untied() -> None:
    c = cost(synthetic(tied=False), policy=QuantPolicy.parse("q8_0"))
    q8 = 34 / 32  # bytes per weight
    norms = 3 * 2 * 64 * 4 + 64 * 4
    assert c.params == 3 * BLOCK_PARAMS + 2 * EMBD + 64
    assert c.disk_bytes == round(q8 * (3 * BLOCK_MATRIX + 2 * EMBD)) + norms
    assert c.read_bytes == round(q8 * (3 * BLOCK_MATRIX + 64 + EMBD)) + norms
    assert c.matmul_macs == 3 * BLOCK_MATRIX + EMBD
    # the stored types, when the checkpoint is already quantized, give the same
    assert cost(synthetic(tied=False, dtype=DType.Q8_0)).disk_bytes == c.disk_bytes


def test_plans_change_what_is_stored_and_run() -> None:
    ck = synthetic(n_layers=4)
    full = cost(ck)
    rep = cost(ck, [0, 1, 1, 1, 3])  # block 2 removed, block 1 run three times
    blk = 4 * BLOCK_PARAMS
    assert rep.stored_blocks == 3 and rep.depth == 5
    assert rep.params == full.params - BLOCK_PARAMS
    assert rep.disk_bytes == full.disk_bytes - blk
    assert rep.read_bytes == full.read_bytes + blk  # five blocks read
    assert rep.matmul_macs == full.matmul_macs + BLOCK_MATRIX
    assert rep.kv_bytes_per_token == full.kv_bytes_per_token * 5 / 4
    mat = cost(ck, [0, 1, 1, 1, 3], materialize_repeats=True)
    assert mat.disk_bytes == full.disk_bytes + blk and mat.read_bytes == rep.read_bytes
    with pytest.raises(FrankenError, match="names block 4"):
        cost(ck, [0, 4])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), spm_model, "mha_untied")


@pytest.mark.parametrize(("quant", "plan"), [("f32", None), ("q8_0", None), ("q4_1m", [0, 2]),
                                             ("q4_0", [2, 1, 1, 0])])
def test_disk_bytes_match_written_gguf(tiny: Path, tmp_path: Path, quant: str, plan: list[int] | None) -> None:
    ckpt = read_checkpoint(tiny)
    policy = QuantPolicy.parse(quant)
    predicted = cost(ckpt, plan, policy=policy)
    out = tmp_path / "m.gguf"
    write_gguf(apply_plan(ckpt, plan) if plan else ckpt, out, dtype=policy, tensor_bytes=transcoder("rtn"))
    header = read_header(out)
    data = header.file_size - header.data_offset  # tensor bytes plus alignment padding between tensors
    assert predicted.disk_bytes <= data < predicted.disk_bytes + 32 * len(header.tensors)
    assert predicted.disk_bytes == sum(t.nbytes for t in read_checkpoint(out).tensors.values())
    used = set(plan or [0, 1, 2])
    assert predicted.params == sum(t.nbytes // 4 for t in ckpt.tensors.values()  # the tiny model is F32
                                   if not t.name.startswith("blk.") or int(t.name.split(".")[1]) in used)
    # what the file costs, read back, is what was predicted (its own plan followed)
    again = cost(read_checkpoint(out))
    assert (again.disk_bytes, again.read_bytes, again.matmul_macs) == (
        predicted.disk_bytes, predicted.read_bytes, predicted.matmul_macs)


def test_demo_model_cost(smollm_gguf: Path) -> None:
    ckpt = read_checkpoint(smollm_gguf)
    c = cost(ckpt)
    header = read_header(smollm_gguf)
    assert c.disk_bytes <= header.file_size - header.data_offset < c.disk_bytes + 32 * len(header.tensors)
    assert 134e6 < c.params < 135e6  # SmolLM2-135M
    # per block: q, o 576x576; k, v 192x576; gate, up, down 3 x 1536x576; output (tied) 49152x576
    assert c.matmul_macs == 30 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576) + 49152 * 576
    assert c.attention_macs_per_position == 30 * 2 * 9 * 64


def test_eval_cost_cli(tiny: Path, tmp_path: Path) -> None:
    code = "import sys; from franken_rt.cli.eval import main; sys.exit(main())"
    out = tmp_path / "cost.json"
    proc = subprocess.run([sys.executable, "-c", code, str(tiny), "--cost", "--ctx-list", "16,64", "--plan", "0,1,1",
                           "--quant", "q8_0", "--json", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=NEUTRAL)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())["cost"]
    c = cost(read_checkpoint(tiny), [0, 1, 1], policy=QuantPolicy.parse("q8_0"))
    assert got["disk_bytes"] == c.disk_bytes and got["macs_per_token"] == {"16": c.macs(16), "64": c.macs(64)}
    assert got["depth"] == 3 and got["stored_blocks"] == 2
    assert "0-1,1 (3 executed, 2 stored blocks)" in proc.stdout and f"{c.params:,}" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", code, str(tiny), "--cost", "--ctx-list", "1,x"],
                          capture_output=True, text=True, timeout=300,
                          cwd=NEUTRAL)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--ctx-list" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", code, str(tiny)], capture_output=True, text=True, timeout=300,
                          cwd=NEUTRAL)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "at least one" in proc.stderr
