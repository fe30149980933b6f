"""Speculative decoding on the demo model, against plain decoding in the same run, alternating: `lookup` on
requests to quote a passage (benchmarks/data/quote_prompts.json), `self` on free generation. Same tokens either way
(greedy); the ratio of decode tokens/s is the figure."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

import franken_rt

pytestmark = pytest.mark.gate
QUOTES = json.loads((Path(__file__).parent / "data" / "quote_prompts.json").read_text())
ROUNDS = 3


@pytest.fixture(scope="module")
def model(smollm_gguf: Path):
    return franken_rt.load(smollm_gguf, threads=2, n_ctx=1024, sequences=2)


def decode_rates(model, prompts: list[str], max_tokens: int, **draft) -> tuple[float, list[list[int]], float]:  # noqa: ANN001
    """Decode tokens/s over the prompts (generation time only), the tokens, and the share of drafts kept."""
    tokens, seconds, outs, drafted, kept = 0, 0.0, [], 0, 0
    for p in prompts:
        outs.append(list(model.generate_tokens(p, max_tokens=max_tokens, temperature=0, **draft)))
        s = model.last_stats
        tokens, seconds = tokens + s.decode_tokens, seconds + s.decode_seconds
        drafted, kept = drafted + s.drafted_tokens, kept + s.accepted_tokens
    return tokens / seconds, outs, kept / drafted if drafted else 0.0


def compare(model, prompts: list[str], max_tokens: int, **draft) -> tuple[float, float]:  # noqa: ANN001
    ratios, acceptance = [], 0.0
    for _ in range(ROUNDS):
        plain, want, _ = decode_rates(model, prompts, max_tokens)
        fast, got, acceptance = decode_rates(model, prompts, max_tokens, **draft)
        assert got == want  # lossless: greedy output is plain decoding's
        ratios.append(fast / plain)
    return statistics.median(ratios), acceptance


def test_lookup_on_quoting(model) -> None:  # noqa: ANN001
    prompts = [model.chat_prompt([{"role": "user", "content": f"Repeat this text exactly:\n\n{q}"}]) for q in QUOTES]
    ratio, acceptance = compare(model, prompts, 96, draft="lookup")
    print(f"lookup on quoting: {ratio:.2f}x plain decode, {acceptance:.0%} of drafts kept")
    assert ratio >= 1.5


def test_self_on_free_text(model) -> None:  # noqa: ANN001
    prompts = [model.chat_prompt([{"role": "user", "content": t}]) for t in
               ("Write a short story about a dragon who learns to bake.", "Explain how rain forms.")]
    # 24 of 30 blocks: the first 22 and the last two
    plan = [*range(22), 28, 29]
    ratio, acceptance = compare(model, prompts, 128, draft="self", draft_plan=plan)
    agreement = model.drafter("self", plan).agreement
    print(f"self (24 of 30 blocks) on free text: {ratio:.2f}x plain decode, agrees {agreement:.0%} with the model "
          f"(measured when made), {acceptance:.0%} of drafts kept")
    # Its drafts agree too rarely to pay on this model: it must notice and not draft. It measures its agreement once
    # when it is made, so what remains is noise.
    assert ratio >= 0.9  # the target is 0.95; the gate leaves room for noise
