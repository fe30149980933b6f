"""Speculative decoding (franken_rt.speculative): drafts checked in one pass change the speed, never the output.
Greedy output is the same tokens as plain decoding on every kernel table; sampled output has the same
distribution (the sampler's check of a drafted token is one draw from the distribution either way)."""

from __future__ import annotations

import collections
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest

from franken_rt import _core
from franken_rt.checkpoint import read_checkpoint
from franken_rt.cli import convert
from franken_rt.errors import FrankenError
from franken_rt.eval.tiny_models import make_tiny_llama
from franken_rt.model import Model
from franken_rt.speculative import DraftLength, LookupDrafter

TABLES = _core.available_kernels()
RUN = Path(sys.executable).parent / "franken-run"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    folder = tmp_path_factory.mktemp("speculative")
    hf = make_tiny_llama(folder / "hf", spm_model, "gqa_tied", seed=7)
    out = folder / "q4_0.gguf"
    assert convert.main([str(hf), "-o", str(out), "--quant", "q4_0", "-q"]) == 0
    return out


def prompts(vocab: int, n: int, seed: int = 0) -> list[list[int]]:
    """Token prompts with repeats in them (what lookup drafts from), of varied length."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        motif = rng.integers(3, vocab, 4 + i % 5).tolist()
        out.append([1, *motif, *rng.integers(3, vocab, i % 7).tolist(), *motif, *motif[:2]])
    return out


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("draft", ["lookup", "self"])
def test_greedy_output_is_plain_decodings(tiny: Path, table: str, draft: str) -> None:
    m = Model(read_checkpoint(tiny), threads=2, n_ctx=96, kernels=table, sequences=2)
    plan = [0, 1] if draft == "self" else None  # the tiny model has 3 blocks
    if draft == "self":  # its measured agreement may be too low to pay: here drafts are what is under test
        m.drafter("self", plan).agreement = 1.0
    drafted = accepted = 0
    for ids in prompts(m.config.vocab_size, 12):
        plain = list(m.generate_tokens(ids, max_tokens=40, temperature=0, ignore_eos=True))
        fast = list(m.generate_tokens(ids, max_tokens=40, temperature=0, ignore_eos=True, draft=draft,
                                      draft_max=6, draft_plan=plan))
        assert fast == plain
        drafted += m.last_stats.drafted_tokens
        accepted += m.last_stats.accepted_tokens
        assert m.last_stats.decode_tokens == len(fast) - 1  # the first comes from the prompt's pass
    assert drafted > 0 and accepted > 0  # the drafts were checked, and some kept


@pytest.mark.parametrize("draft", ["lookup", "self"])
def test_repetition_penalty_and_stop_strings_as_in_plain_decoding(tiny: Path, draft: str) -> None:
    """Kept drafts join the repetition window before the next row is drawn, and stop strings cut the text of the
    emitted tokens, so greedy output with a penalty, and where a stop string ends it, is plain decoding's."""
    m = Model(read_checkpoint(tiny), threads=2, n_ctx=128, sequences=2)
    plan = [0, 1] if draft == "self" else None
    if draft == "self":  # drafts are what is under test, whatever the measured agreement
        m.drafter("self", plan).agreement = 1.0
    penalty = dict(max_tokens=40, temperature=0, repetition_penalty=1.3, repeat_last_n=16, ignore_eos=True)
    drafted = stopped = 0
    for ids in prompts(m.config.vocab_size, 8, seed=11):
        plain = list(m.generate_tokens(ids, **penalty))
        assert list(m.generate_tokens(ids, draft=draft, draft_plan=plan, **penalty)) == plain
        drafted += m.last_stats.drafted_tokens
        text = "".join(m.generate(ids, **penalty))
        stop = text[len(text) // 2:len(text) // 2 + 3]
        if not stop.strip():
            continue
        cut = "".join(m.generate(ids, stop=[stop], **penalty))
        assert m.last_stats.finish_reason == "stop" and cut == text[:text.index(stop)]
        assert "".join(m.generate(ids, stop=[stop], draft=draft, draft_plan=plan, **penalty)) == cut
        assert m.last_stats.finish_reason == "stop"
        stopped += 1
    assert drafted > 0 and stopped >= 4


def test_the_cache_holds_what_was_kept(tiny: Path) -> None:
    """After drafts were refused, the cache is cut back: the model continues as if it had never seen them."""
    m = Model(read_checkpoint(tiny), threads=2, n_ctx=128)
    ids = prompts(m.config.vocab_size, 1, seed=3)[0]
    out = list(m.generate_tokens(ids, max_tokens=30, temperature=0, ignore_eos=True, draft="lookup"))
    assert m.last_stats.drafted_tokens > m.last_stats.accepted_tokens  # some refused
    assert m._core.n_past == len(ids) + len(out) - 1 == len(m._cached)  # the last token is not run yet
    assert m.logits(ids + out)[-1].argmax() == m.logits(ids + out)[-1].argmax()
    fresh = Model(read_checkpoint(tiny), threads=2, n_ctx=128)
    cont = ids + out
    assert list(m.generate_tokens(cont, max_tokens=8, temperature=0, ignore_eos=True)) == \
        list(fresh.generate_tokens(cont, max_tokens=8, temperature=0, ignore_eos=True))


SETTINGS = [
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),     # no filter: drawn in vocabulary order
    dict(temperature=0.7, top_k=0, top_p=0.9, min_p=0.05),    # threshold search, then top-p and min-p
    dict(temperature=1.3, top_k=4, top_p=1.0, min_p=0.0),     # top-k
]


@pytest.mark.parametrize("setting", SETTINGS)
def test_checking_a_draft_is_one_draw_from_the_distribution(setting: dict) -> None:
    """Sampler.sample(draft=x) against plain sample: the same frequencies over 20000 draws, for a likely draft,
    an unlikely one, and one the filters drop."""
    logits = np.array([2.0, 1.5, 1.2, 0.3, 0.0, -0.5, -1.0, -3.0], dtype=np.float32)
    history = np.array([], dtype=np.int32)
    n = 20000

    def freq(draft: int, seed: int) -> np.ndarray:
        sp = _core.SamplerParams()
        for k, v in setting.items():
            setattr(sp, k, v)
        sp.seed = seed
        s = _core.Sampler(sp)
        counts = collections.Counter(s.sample(logits, history, draft) for _ in range(n))
        return np.array([counts[i] for i in range(len(logits))]) / n

    plain = freq(-1, 1)
    for draft in (0, 3, 7):
        f = freq(draft, 2 + draft)
        assert np.abs(f - plain).max() < 0.015, (draft, f, plain)  # ~4 standard deviations at p = 0.5
        if plain[draft] == 0:
            assert f[draft] == 0  # a draft the filters drop is never kept


def test_greedy_check_keeps_only_the_argmax() -> None:
    sp = _core.SamplerParams()
    sp.temperature = 0.0
    s = _core.Sampler(sp)
    logits = np.array([0.1, 3.0, 2.9], dtype=np.float32)
    assert s.sample(logits, np.array([], dtype=np.int32), 1) == 1
    assert s.sample(logits, np.array([], dtype=np.int32), 2) == 1


def test_lookup_proposes_what_followed_the_latest_match() -> None:
    d = LookupDrafter()
    assert d.propose(array("i", [5, 6, 7, 8, 9, 5, 6, 7]), 3) == [8, 9, 5]
    assert d.propose(array("i", [5, 6, 1, 5, 6, 2, 5, 6]), 2) == [2, 5]  # the latest occurrence
    assert d.propose(array("i", [1, 2, 3, 4]), 4) == []  # nothing repeats
    assert d.propose(array("i", [256, 1, 1]), 2) == [1]  # whole tokens only: 256's bytes hold a 1 too


def test_draft_length_follows_acceptance_and_pauses() -> None:
    length = DraftLength(max_k=8, cost=0.0)
    first = length.next()
    assert 1 <= first < 8
    for _ in range(20):
        length.update(8, 8)
    assert length.next() == 8
    for _ in range(20):
        length.update(1, 0)
    steps = [length.next() for _ in range(32)]
    assert steps.count(0) >= 30 and 1 in steps  # paused, with a probe now and then
    costly = DraftLength(max_k=8, cost=0.8)
    assert [costly.next() for _ in range(200)].count(1) == 1  # a drafter that costs time probes once
    # A measured agreement starts the rate: too low to pay for a costly drafter (0.8 + ROW_COST per drafted row),
    # it never drafts, not even a probe; high enough, it drafts from the first step. A free drafter still probes.
    assert DraftLength(max_k=8, cost=0.8, agreement=0.9).off
    never = DraftLength(max_k=8, cost=0.8, agreement=0.9)
    assert not any(never.next() for _ in range(200))
    assert DraftLength(max_k=8, cost=0.8, agreement=0.95).next() >= 1
    free = DraftLength(max_k=8, cost=0.0, agreement=0.0)
    assert not free.off and 1 in [free.next() for _ in range(32)]


def test_bad_draft_options(tiny: Path, tmp_path: Path) -> None:
    m = Model(read_checkpoint(tiny), threads=1, n_ctx=64)
    with pytest.raises(FrankenError, match="sequences=2"):
        list(m.generate_tokens([1, 2, 3], max_tokens=2, draft="self", draft_plan=[0]))
    with pytest.raises(FrankenError, match="draft length"):
        list(m.generate_tokens([1, 2, 3], max_tokens=2, draft="lookup", draft_max=0))
    with pytest.raises(FrankenError, match="no such file"):
        m.drafter(str(tmp_path / "missing.gguf"))
    proc = subprocess.run([str(RUN), str(tiny), "-p", "hi", "--draft-plan", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--draft self" in proc.stderr and "Traceback" not in proc.stderr


def test_a_draft_model_file_and_a_recorded_plan(tiny: Path, tmp_path: Path) -> None:
    """The other two drafters: a separate file (here the same model: every draft agrees), and the self plan that
    franken-convert --draft-plan records in the file."""
    m = Model(read_checkpoint(tiny), threads=2, n_ctx=96)
    ids = prompts(m.config.vocab_size, 1, seed=5)[0]
    plain = list(m.generate_tokens(ids, max_tokens=24, temperature=0, ignore_eos=True))
    d = m.drafter(str(tiny))
    assert d.agreement == 1.0 and d.cost == pytest.approx(1.0)
    same = list(m.generate_tokens(ids, max_tokens=24, temperature=0, ignore_eos=True, draft=str(tiny)))
    assert same == plain and m.last_stats.draft_off and m.last_stats.drafted_tokens == 0  # as slow as the model
    d.cost = 0.25  # what a file of a quarter of the bytes would cost: now drafting pays
    fast = list(m.generate_tokens(ids, max_tokens=24, temperature=0, ignore_eos=True, draft=str(tiny)))
    assert fast == plain and m.last_stats.accepted_tokens == m.last_stats.drafted_tokens > 0
    out = tmp_path / "with-draft-plan.gguf"
    assert convert.main([str(tiny), "-o", str(out), "--draft-plan", "0,2", "-q"]) == 0
    recorded = Model(read_checkpoint(out), threads=2, n_ctx=96, sequences=2)
    assert recorded.drafter("self").plan == [0, 2]
    own = list(recorded.generate_tokens(ids, max_tokens=24, temperature=0, ignore_eos=True))  # its own rounding
    assert list(recorded.generate_tokens(ids, max_tokens=24, temperature=0, ignore_eos=True, draft="self")) == own


def test_a_model_drafters_agreement_is_measured(tiny: Path) -> None:
    """Before a model drafter drafts, the share of positions of the model's own sampled text where its likeliest
    token is the model's: here against numpy's argmax of the two plans' logits on the same text."""
    m = Model(read_checkpoint(tiny), threads=2, n_ctx=96, sequences=2)
    d = m.drafter("self", [0, 2])
    text = m.sample_text()
    assert text == m.sample_text() and len(text) == 64
    full = m.logits(text).argmax(-1)
    shallow = Model(read_checkpoint(tiny), threads=2, n_ctx=96, layer_plan=[0, 2]).logits(text).argmax(-1)
    assert d.agreement == pytest.approx(float((full == shallow).mean()))
    measured = d.agreement
    plain = list(m.generate_tokens(text[:20], max_tokens=24, temperature=0, ignore_eos=True))
    d.agreement = 1.0  # drafts are what is under test here, whatever the tiny model's agreement
    # a prompt the measurement's text begins with: the drafter's cache holds it already, and still serves
    assert list(m.generate_tokens(text[:20], max_tokens=24, temperature=0, ignore_eos=True, draft="self",
                                  draft_plan=[0, 2])) == plain
    s = m.last_stats
    assert s.draft_agreement == 1.0 and not s.draft_off and s.drafted_tokens > 0
    d.agreement = measured
    short = Model(read_checkpoint(tiny), threads=2, n_ctx=12, sequences=2)  # too short a context to sample in
    assert short.drafter("self", [0, 2]).agreement is None  # unmeasured: it probes as before
    assert list(short.generate_tokens([1, 5, 6], max_tokens=6, temperature=0, ignore_eos=True, draft="self",
                                      draft_plan=[0, 2])) == \
        list(short.generate_tokens([1, 5, 6], max_tokens=6, temperature=0, ignore_eos=True))
    with pytest.raises(_core.CoreError, match="256"):
        m._core.greedy_tokens(array("i", [1] * 257), 0)


def test_a_self_plan_measured_when_none_is_given(tiny: Path) -> None:
    """Without --draft-plan or a recorded plan, the self drafter leaves out the run of a quarter of the blocks that
    turns the residual stream least, measured by the core on text the model samples (the same every time); greedy
    output stays the plain decoding's."""
    m = Model(read_checkpoint(tiny), threads=2, n_ctx=96, sequences=2)
    plan = m.measured_draft_plan()
    assert plan == m.measured_draft_plan() == m.drafter("self").plan
    depth = len(m.layer_plan)
    assert len(plan) == depth - max(1, depth // 4)
    # the core's distances against numpy's on the same trace
    start = m.prompt_tokens("The")
    text = start + list(m.generate_tokens(start, max_tokens=64 - len(start), temperature=0.8, top_p=0.95, seed=0,
                                          ignore_eos=True))
    inputs = m.residuals(text)[0::2].astype(np.float64)  # (depth + 1, n, dim)
    unit = inputs / np.linalg.norm(inputs, axis=-1, keepdims=True)
    skip = depth - len(plan)
    ang = np.arccos(np.clip((unit[:-skip] * unit[skip:]).sum(-1), -1, 1))[:, 1:].mean(axis=1) / np.pi
    got = m._fresh(text, lambda ids: m._core.block_distances(ids, skip))
    np.testing.assert_allclose(got, ang, rtol=1e-4, atol=1e-6)
    first = int(np.argmin(ang))
    assert plan == [b for i, b in enumerate(m.layer_plan) if not first <= i < first + skip]
    ids = prompts(m.config.vocab_size, 1, seed=3)[0]
    plain = list(m.generate_tokens(ids, max_tokens=24, temperature=0, ignore_eos=True))
    assert list(m.generate_tokens(ids, max_tokens=24, temperature=0, ignore_eos=True, draft="self")) == plain
    m._core.truncate(0)
    with pytest.raises(_core.CoreError, match="shift"):
        m._core.block_distances(array("i", text), 0)
    with pytest.raises(_core.CoreError, match="tokens"):
        m._core.block_distances(array("i", text[:1]), 1)
