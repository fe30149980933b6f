"""Multiple-choice questions (HellaSwag's jsonl form) built from any text: the context is a few consecutive
sentences, the true ending the sentence that follows them, and three distractors sentences of similar length drawn
from elsewhere in the text. Seeded, so the same text and seed give the same questions (`python tools/make_mc.py`
writes them to a file for `franken-eval --mc`)."""

from __future__ import annotations

import random
import re

from franken_rt.errors import FrankenError

_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")
MIN_CHARS, MAX_CHARS = 20, 240
MIN_DISTANCE = 20  # distractors come from at least this many sentences away from the question


def _prose(sentence: str) -> bool:
    """Looks like a sentence of prose: mostly letters and spaces, ends in punctuation, no code markup."""
    if not MIN_CHARS <= len(sentence) <= MAX_CHARS or sentence[-1] not in ".!?":
        return False
    plain = sum(ch.isalpha() or ch in " ,;:'\"-()“”‘’" for ch in sentence)
    return plain >= 0.9 * len(sentence) and not any(s in sentence for s in (">>>", "::", "==", "**", "--"))


def sentences(text: str) -> list[tuple[int, str]]:
    """(run number, sentence) for the prose sentences of the text, in order; whitespace inside a paragraph is
    collapsed. A run is a stretch of prose: anything that is not prose (code, headings, lists) ends it, so contexts
    never jump over it."""
    out: list[tuple[int, str]] = []
    para = 0
    for block in re.split(r"\n\s*\n", text):
        flat = " ".join(block.split())
        for s in _SPLIT.split(flat):
            s = s.strip()
            if _prose(s):
                out.append((para, s))
            else:
                para += 1
    return out


def make_questions(text: str, n: int, context_sentences: int = 3, seed: int = 0, n_endings: int = 4) -> list[dict]:
    """Up to `n` questions: {"ctx", "endings", "label"}; contexts do not overlap each other."""
    if n < 1 or context_sentences < 1:
        raise FrankenError("need n >= 1 and context_sentences >= 1")
    sents = sentences(text)
    k = context_sentences
    starts = [i for i in range(len(sents) - k) if sents[i][0] == sents[i + k][0]]  # k + 1 in one run of prose
    rng = random.Random(seed)
    rng.shuffle(starts)
    used: set[int] = set()
    chosen = []
    for i in starts:
        if any(j in used for j in range(i, i + k + 1)):
            continue
        used.update(range(i, i + k + 1))
        chosen.append(i)
        if len(chosen) == n:
            break
    if not chosen:
        raise FrankenError(f"the text has no {k + 1} consecutive prose sentences to build a question from")
    questions = []
    for i in sorted(chosen):
        true = sents[i + k][1]
        distractors = _distractors(sents, i, k, true, rng, n_endings - 1)
        if len(distractors) < n_endings - 1:
            continue
        endings = [true, *distractors]
        rng.shuffle(endings)
        questions.append({"ctx": " ".join(s for _, s in sents[i:i + k]), "endings": endings,
                          "label": endings.index(true)})
    return questions


def _distractors(sents: list[tuple[int, str]], i: int, k: int, true: str, rng: random.Random,
                 count: int) -> list[str]:
    """`count` different sentences far from the question (sentences i .. i + k), sampled among the 8 * count
    closest in length to the true ending."""
    far = [j for j in range(len(sents))
           if (j < i - MIN_DISTANCE or j > i + k + MIN_DISTANCE) and sents[j][1] != true]
    far.sort(key=lambda j: abs(len(sents[j][1]) - len(true)))
    pool = far[: 8 * count]
    picks: list[str] = []
    for j in rng.sample(pool, len(pool)):
        if sents[j][1] not in picks:
            picks.append(sents[j][1])
        if len(picks) == count:
            break
    return picks
