"""The rows of docs/surgery.md's "Healing by distillation" table: one healing of SmolLM2 with blocks 13-18 removed
(what `--drop 6` chooses on the pydoc calibration), written as an f16 GGUF to score with franken-eval. Run each
variant as its own process (the machine is shared; each takes minutes to an hour of wall time there):

    python -c "import pydoc_data.topics as t; print('\\n'.join(t.topics.values()))" > /tmp/pydoc.txt
    python tools/heal_compare.py none /tmp/none.gguf
    python tools/heal_compare.py ridge /tmp/ridge.gguf
    python tools/heal_compare.py distill /tmp/distill.gguf --init none --epochs 3
    python tools/heal_compare.py distill /tmp/distill-ridge.gguf
    franken-eval /tmp/distill-ridge.gguf --ppl /usr/share/common-licenses/GPL-3 --activations f32 --kv-cache f32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from franken_rt.cache import cache_dir
from franken_rt.checkpoint import read_checkpoint
from franken_rt.checkpoint.gguf_writer import write_gguf
from franken_rt.checkpoint.layer_plan import drop
from franken_rt.eval.memory import peak_rss_mib
from franken_rt.model import Model
from franken_rt.quant.policy import QuantPolicy
from franken_rt.quant.tensors import transcoder
from franken_rt.surgery import distill as ds
from franken_rt.surgery import healing
from franken_rt.surgery.calib import read_text, windows
from franken_rt.surgery.pipeline import CALIB_CTX, CALIB_WINDOWS
from franken_rt.surgery.plan import apply_plan

REMOVED = list(range(13, 19))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("method", choices=["none", *healing.METHODS])
    ap.add_argument("out", type=Path)
    ap.add_argument("--source", type=Path, default=cache_dir() / "converted" / "smollm2-f32.gguf")
    ap.add_argument("--calib", type=Path, default=Path("/tmp/pydoc.txt"),
                    help="calibration text (the table: the pydoc topics, one per line, in the module's order)")
    ap.add_argument("--init", default=None, help="distill: ridge (default) or none")
    ap.add_argument("--epochs", type=int, default=None, help="distill: epochs (default: the recipe's)")
    args = ap.parse_args()
    ckpt = read_checkpoint(args.source)
    model = Model(ckpt, threads=2, n_ctx=CALIB_CTX, activations="f32", kv_cache="f32")
    wins = windows(model, read_text(args.calib), CALIB_CTX, max_windows=CALIB_WINDOWS)
    del model
    folder = Path(tempfile.mkdtemp(prefix="franken-heal-compare-"))
    t0 = time.process_time()
    note = "no healing"
    if args.method == "distill" and (args.init or args.epochs):
        cfg = ds.DistillConfig(**{k: v for k, v in (("init", args.init), ("epochs", args.epochs)) if v is not None})
        ckpt, report = ds.distill(ckpt, REMOVED, wins, folder, 2, cfg, verbose=True)
        note = report.describe()
    elif args.method != "none":
        ckpt, note = healing.heal(args.method, ckpt, REMOVED, wins, folder, threads=2)
    print(f"{note}; {time.process_time() - t0:.0f} CPU s; peak {peak_rss_mib():.0f} MiB")
    write_gguf(apply_plan(ckpt, drop(ckpt.config.n_layers, REMOVED)), args.out, dtype=QuantPolicy.parse("f16"),
               force=True, tensor_bytes=transcoder())


if __name__ == "__main__":
    main()
