#!/usr/bin/env python3
"""Parity figures against transformers: max |logit difference| on the tiny random models of the tests and on the
demo model (which transformers loads from the same GGUF, dequantized). The tests assert bounds; this prints the
measured values.  Needs the test dependencies:  python tools/parity_report.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

PROMPT = [1, 57, 300, 12, 99, 250, 7, 180, 33, 64, 310, 5, 41, 222, 90, 17]
PARAGRAPH = ("In 1889, the Eiffel Tower opened in Paris; it was 300 metres tall. Today, about 7 million people visit "
             "it each year, and tickets cost between 10 and 30 euros.")


def main() -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import franken_rt
    from franken_rt.eval.demo_model import existing_model_path
    from franken_rt.eval.tiny_models import (
        VARIANTS,
        load_reference_precision,
        make_tiny_llama,
        reference_logits,
        reference_model,
        train_sentencepiece,
    )

    tmp = Path(tempfile.mkdtemp())
    spm = train_sentencepiece(tmp)
    for variant in sorted(VARIANTS):
        folder = make_tiny_llama(tmp / variant, spm, variant)
        d = np.abs(load_reference_precision(folder).logits(PROMPT) - reference_logits(reference_model(folder), PROMPT))
        print(f"tiny {variant:11} max|diff| all positions {d.max():.2e}, last position {d[-1].max():.2e}")

    demo = existing_model_path()
    kwargs = dict(gguf_file=demo.name)
    model = AutoModelForCausalLM.from_pretrained(demo.parent, dtype=torch.float32, **kwargs).eval()
    ids = AutoTokenizer.from_pretrained(demo.parent, **kwargs)(PARAGRAPH)["input_ids"]
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].numpy()
    for name, ours in (("reference precision (f32 activations, f32 KV)", load_reference_precision(demo)),
                       ("default (8-bit activations, f16 KV)", franken_rt.load(demo, threads=2))):
        mine = ours.logits(ids)
        d = np.abs(mine - theirs)
        agree = np.mean(mine.argmax(axis=1) == theirs.argmax(axis=1))
        print(f"SmolLM2 {name}: max|diff| last {d[-1].max():.2e}, all {d.max():.2e}, top-1 agreement {agree:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
