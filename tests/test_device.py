"""On the device: --cpus pins the threads (thread t on the t-th CPU given, the model's calling thread on the first),
and --max-memory picks the context and KV cache type that fit a memory budget, says which, and refuses what cannot
fit, with the numbers."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.make_corpus import tiny_gguf

import franken_rt
import franken_rt.resources as resources
from franken_rt.checkpoint import Checkpoint, read_checkpoint
from franken_rt.errors import FrankenError
from franken_rt.model import Model
from franken_rt.resources import KEY_CHUNK, MIN_CTX, plan_memory, runtime_bytes

MiB = 1 << 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("device") / "tiny.gguf"
    tiny_gguf(path, tokenizer="llama", quant="q8_0")
    return path


# ---- --cpus ----------------------------------------------------------------------------------------------------------

AFFINITY = """
import json, os, sys, threading
import franken_rt
cpus = json.loads(sys.argv[2])
model = franken_rt.load(sys.argv[1], cpus=cpus, threads=int(sys.argv[3]))
"".join(model.generate("a b c", max_tokens=4, temperature=0))
tasks = {t: sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
main = tasks.pop(str(threading.get_native_id()))
del model  # the pool gives the calling thread its CPUs back; a model loaded after it is not confined to cpus[0]
after = franken_rt.load(sys.argv[1])
print(json.dumps({"main": main, "others": list(tasks.values()), "threads": int(sys.argv[3]), "cpus": cpus,
                  "after": sorted(os.sched_getaffinity(0)), "after_threads": after.threads}))
"""


def affinities(model: Path, cpus: list[int] | None, threads: int, tmp_path: Path) -> dict:
    # In a child process: pinning is per thread and would stay on the test runner's thread. Run from a folder
    # without the source tree, so the installed package (with its core) is imported.
    out = subprocess.run([sys.executable, "-c", AFFINITY, str(model), json.dumps(cpus), str(threads)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


two_cpus = pytest.mark.skipif(len(resources.allowed_cpus()) < 2, reason="pinning two threads needs two CPUs")


@two_cpus
def test_threads_are_pinned_to_the_cpus_given(tiny: Path, tmp_path: Path) -> None:
    first, second = resources.allowed_cpus()[:2]
    got = affinities(tiny, [second, first], 2, tmp_path)
    assert got["main"] == [second]  # the thread that runs the model is thread 0
    assert [first] in got["others"]  # the pool's worker
    assert got["after"] == resources.allowed_cpus()  # given back when the model is gone
    assert got["after_threads"] == resources.physical_cores(resources.allowed_cpus())
    got = affinities(tiny, [second], 1, tmp_path)
    assert got["main"] == [second]


@two_cpus
def test_without_cpus_nothing_is_pinned(tiny: Path, tmp_path: Path) -> None:
    got = affinities(tiny, None, 2, tmp_path)
    allowed = resources.allowed_cpus()
    assert got["main"] == allowed
    assert all(a == allowed for a in got["others"])


def test_cpu_lists() -> None:
    allowed = resources.allowed_cpus()
    last = allowed[-1]
    assert resources.parse_cpus(f"{last}") == [last]
    assert resources.parse_cpus(f"{allowed[0]}-{last},{allowed[0]}") == allowed  # each once, in the order given
    assert resources._cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    for bad in ("", "a", "1-0", "0-", "0,,1", "-1", "0-999999999", str(max(allowed) + 1)):
        with pytest.raises(FrankenError, match="--cpus"):
            resources.parse_cpus(bad)


def test_default_threads_are_the_physical_cores_among_the_cpus(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two SMT siblings on one core and a second core: two threads by default, one per core first.
    cores = {10: "10-11", 11: "10-11", 12: "12"}
    monkeypatch.setattr(resources, "_core_of", cores.get)
    assert resources.physical_cores([10, 11, 12]) == 2
    assert resources.one_per_core([10, 11, 12]) == [10, 12, 11]
    assert resources.physical_cores([10, 11]) == 1
    monkeypatch.setattr(resources, "_core_of", lambda cpu: None)  # no topology to read: every CPU counts
    assert resources.physical_cores([10, 11, 12]) == 3


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"cpus": "0-"}, "--cpus"),
    ({"cpus": [4096]}, "--cpus"),
    ({"cpus": []}, "--cpus"),
    ({"cpus": ["0"]}, "cpus"),
    ({"cpus": str(resources.allowed_cpus()[0]), "threads": 2}, "threads"),
])
def test_bad_cpus(tiny: Path, kwargs: dict, fragment: str) -> None:
    with pytest.raises(FrankenError, match=fragment):
        franken_rt.load(tiny, **kwargs)


# ---- --max-memory ------------------------------------------------------------------------------------------------


@functools.cache
def checkpoint(path: Path) -> Checkpoint:
    return read_checkpoint(path)


def weight_bytes(path: Path) -> int:
    return sum(t.nbytes for t in checkpoint(path).tensors.values())


def need(path: Path, n_ctx: int, kv: str, threads: int = 1) -> int:
    c = checkpoint(path).config
    return weight_bytes(path) + runtime_bytes(c, c.n_layers, n_ctx, kv, threads)


def test_max_memory_picks_the_widest_cache_then_the_longest_context(smollm_gguf: Path) -> None:
    tiny = smollm_gguf  # a Q8_0 cache needs heads of 32 values or more
    c = checkpoint(tiny).config
    full = min(c.context_length, 2048)
    assert full >= 2 * KEY_CHUNK  # room to cut the context
    load = lambda budget, **kw: Model(checkpoint(tiny), threads=1, max_memory=budget, check_values=False,  # noqa: E731
                                      **kw)
    m = load(need(tiny, full, "f16"))
    assert (m.n_ctx, m.kv_cache) == (full, "f16") and m.memory_plan.total == need(tiny, full, "f16")
    m = load(need(tiny, full, "f16") - 1)  # q8 halves the cache before any context is cut
    assert (m.n_ctx, m.kv_cache) == (full, "q8")
    m = load(need(tiny, full, "q8") - 1)  # then the longest context, in whole key chunks, that fits
    assert m.kv_cache == "q8" and m.n_ctx % KEY_CHUNK == 0 and MIN_CTX <= m.n_ctx < full
    assert need(tiny, m.n_ctx, "q8") < need(tiny, full, "q8") <= need(tiny, m.n_ctx + KEY_CHUNK, "q8")
    m = load(f"{need(tiny, full, 'f16') / MiB + 1:.3f}MiB")  # sizes as text
    assert m.kv_cache == "f16"
    # An explicit choice is kept: the other one fits around it, or it is refused with the numbers.
    m = load(need(tiny, full, "f16") - 1, kv_cache="f16")
    assert (m.kv_cache, m.n_ctx) == ("f16", full - KEY_CHUNK)
    m = load(need(tiny, 512, "f32"), n_ctx=512)
    assert (m.kv_cache, m.n_ctx) == ("f16", 512)
    with pytest.raises(FrankenError, match=r"context 512 tokens, f32 KV cache: weights \d+ MiB"):
        load(need(tiny, 512, "f32") - 1, n_ctx=512, kv_cache="f32")
    with pytest.raises(FrankenError, match="the weights alone take"):
        load(weight_bytes(tiny))
    with pytest.raises(FrankenError, match="even context 256 tokens"):
        load(need(tiny, MIN_CTX, "q8") - 1)
    for bad in ("lots", "0", "-5M"):
        with pytest.raises(FrankenError, match="max-memory"):
            load(bad)


def test_plan_memory_cuts_the_context_to_the_last_chunk_that_fits(smollm_gguf: Path) -> None:
    c = read_checkpoint(smollm_gguf).config
    weights = 100 * MiB
    for default in (1000, 2048, 700):  # the model's own context need not be a multiple of the key chunk
        for ctx in range(MIN_CTX, default, KEY_CHUNK):
            budget = weights + runtime_bytes(c, c.n_layers, ctx, "q8", 2)
            assert plan_memory(c, c.n_layers, weights, budget, None, None, default, 2).n_ctx == ctx, (default, ctx)
    with pytest.raises(FrankenError, match="even context 200 tokens"):  # a model context below MIN_CTX
        plan_memory(c, c.n_layers, weights, weights + runtime_bytes(c, c.n_layers, 200, "q8", 2) - 1, None, None,
                    200, 2)


def test_plan_memory_is_monotone(smollm_gguf: Path) -> None:
    c = read_checkpoint(smollm_gguf).config
    weights = 100 * MiB
    plans = [plan_memory(c, 30, weights, b * MiB, None, None, 8192, 2) for b in range(140, 800, 20)]
    assert all(p.total <= b * MiB for p, b in zip(plans, range(140, 800, 20)))
    order = [(p.kv_cache == "f16", p.n_ctx) for p in plans]
    ranks = [(ctx, f16) for f16, ctx in order]
    assert ranks == sorted(ranks)  # more memory never buys a shorter context or a narrower cache
    assert plans[0].n_ctx < 8192 and plans[-1].kv_cache == "f16" and plans[-1].n_ctx == 8192


def test_weights_count_against_available_memory(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda: need(tiny, 64, "f16") - 1)
    with pytest.raises(FrankenError, match=r"the weights take \d+ MiB and a context of 64 tokens needs"):
        franken_rt.load(tiny, threads=1, n_ctx=64)
    monkeypatch.setattr(resources, "available_memory", lambda: need(tiny, 64, "f16"))
    franken_rt.load(tiny, threads=1, n_ctx=64)


def franken_run() -> str:
    return str(Path(sys.executable).with_name("franken-run"))


def test_cli_says_what_max_memory_chose(smollm_gguf: Path) -> None:
    tiny = smollm_gguf
    c = checkpoint(tiny).config
    full = min(c.context_length, 2048)
    budget = need(tiny, full, "f16", threads=1) - 1
    out = subprocess.run([franken_run(), str(tiny), "-p", "a b", "-n", "2", "-t", "1", "--max-memory", str(budget)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"[--max-memory: context {full} tokens, q8 KV cache: weights" in out.stderr
    out = subprocess.run([franken_run(), str(tiny), "-p", "a b", "-t", "1", "--max-memory", "1k"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "franken-run: error: --max-memory 0 MiB: the weights alone take" in out.stderr
    out = subprocess.run([franken_run(), str(tiny), "-p", "a", "-n", "1", "--cpus", "99999"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--cpus: CPU 99999 is not one this process may use" in out.stderr


# ---- huge pages for the repacked weights -----------------------------------------------------------------------------

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")

HUGE = """
import json, sys
import franken_rt
model = franken_rt.load(sys.argv[1], threads=1, n_ctx=64)
"".join(model.generate("a b c", max_tokens=2, temperature=0))
fields = dict(line.split(":", 1) for line in open("/proc/self/smaps_rollup") if ":" in line)
print(json.dumps({"huge": int(fields["AnonHugePages"].split()[0]) * 1024, "kernels": model.kernels}))
"""


@pytest.mark.skipif(not THP.exists() or "[never]" in THP.read_text(), reason="the kernel offers no huge pages")
def test_repacked_weights_sit_in_huge_pages(smollm_gguf: Path, tmp_path: Path) -> None:
    """A decode step streams every weight once: the matrices repacked at load share one mapping advised
    MADV_HUGEPAGE (one TLB entry per 2 MiB instead of per 4 KiB). Where the kernel offers transparent huge pages (in
    `madvise` mode too), nearly all of the repacked bytes are in them."""
    out = subprocess.run([sys.executable, "-c", HUGE, str(smollm_gguf)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    matrices = [t for t in read_checkpoint(smollm_gguf).tensors.values() if len(t.shape) == 2]
    repacked = sum(t.nbytes for t in matrices)  # the demo model's matrices are Q4_1: every table but "reference"
    print(f"{r['huge'] / MiB:.0f} MiB in huge pages of {repacked / MiB:.0f} MiB repacked ({r['kernels']})")
    assert r["huge"] >= repacked - 4 * MiB  # all but the partly filled 2 MiB pages at the ends
