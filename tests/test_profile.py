"""FRANKEN_PROFILE=1: the time per stage of every forward pass and the thread-pool hand-offs, printed at exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from franken_rt.cli import convert
from franken_rt.eval.tiny_models import make_tiny_llama

RUN = Path(sys.executable).parent / "franken-run"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_model: Path) -> Path:
    folder = tmp_path_factory.mktemp("profile")
    out = folder / "q4_0.gguf"
    assert convert.main([str(make_tiny_llama(folder / "hf", spm_model, "gqa_tied", seed=3)), "-o", str(out),
                         "--quant", "q4_0", "-q"]) == 0
    return out


def run(model: Path, profile: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "FRANKEN_PROFILE"}
    if profile is not None:
        env["FRANKEN_PROFILE"] = profile
    proc = subprocess.run([str(RUN), str(model), "-p", "hello", "-n", "12", "--ignore-eos", "-t", "2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_profile_reports_every_stage(tiny: Path) -> None:
    report = run(tiny, "1")
    m = re.search(r"franken profile: (\d+) passes, (\d+) rows", report)
    assert m and int(m.group(1)) == 12  # the prompt's pass and 11 decode steps
    for stage in ("q/k/v", "attention", "gate/up", "down", "output"):
        assert stage in report
    shares = [float(s) for s in re.findall(r"([\d.]+)%$", report, re.M)]
    assert len(shares) == 11 and abs(sum(shares) - 100) < 0.5
    handoffs = re.search(r"hand-offs: (\d+) \(([\d.]+) per pass\)", report)
    assert handoffs and int(handoffs.group(1)) > 0


def test_no_profile_unless_asked(tiny: Path) -> None:
    assert "franken profile" not in run(tiny, None)
    assert "franken profile" not in run(tiny, "0")
