#!/usr/bin/env python3
"""Build a multiple-choice set (HellaSwag's jsonl form) from any text: the context is a few consecutive sentences,
the true ending the sentence that follows them, and three distractors sentences of similar length drawn from
elsewhere in the text. Seeded, so the same text and seed give the same file.

    python tools/make_mc.py [TEXT_FILE] -o questions.jsonl [--n 200] [--context-sentences 3] [--seed 0]

Without TEXT_FILE it uses the pydoc topics text (franken_rt.eval.corpus). Then:
    franken-eval MODEL --mc questions.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from franken_rt.checkpoint.gguf_writer import atomic_output
from franken_rt.cli import ArgumentParser, user_errors
from franken_rt.eval.corpus import pydoc_text, read_text
from franken_rt.eval.mc_questions import make_questions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="make_mc.py", description="Build a multiple-choice jsonl set from a text.")
    ap.add_argument("text", nargs="?", help="UTF-8 text file (default: the pydoc topics text)")
    ap.add_argument("-o", "--output", required=True, help="output .jsonl file")
    ap.add_argument("--n", type=int, default=200, help="number of questions (200)")
    ap.add_argument("--context-sentences", type=int, default=3, help="sentences of context (3)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (0)")
    ap.add_argument("--force", action="store_true", help="replace an existing output file")
    return ap.parse_args(argv)


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text = read_text(args.text) if args.text else pydoc_text()
    questions = make_questions(text, args.n, args.context_sentences, args.seed)
    with atomic_output(Path(args.output), [Path(args.text)] if args.text else [], force=args.force) as tmp:
        tmp.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
    print(f"{len(questions)} questions -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
