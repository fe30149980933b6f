"""franken-convert interrupted (Ctrl-C) or failing (disk full) mid-write: no partial or temporary output, the input
unchanged, an existing output unchanged, one line on stderr and a non-zero exit code."""

from __future__ import annotations

import errno
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fuzz.make_corpus import tiny_gguf

from franken_rt.eval.demo_model import sha256

CONVERT = str(Path(sys.executable).parent / "franken-convert")


def digest(path: Path) -> str:
    return sha256(path)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines()
             if line.strip() and not line.startswith("franken-convert: warning:")]  # e.g. requantizing Q4_1
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("existing", [False, True])
def test_ctrl_c_mid_conversion(smollm_gguf: Path, tmp_path: Path, existing: bool) -> None:
    out = tmp_path / "out.gguf"
    if existing:
        out.write_bytes(b"an earlier conversion")
    before = digest(smollm_gguf)
    args = [CONVERT, str(smollm_gguf), "-o", str(out), "--quant", "q4_0", "--rounding", "search", "-q"]
    # A shell runs background jobs (`pytest &`, nohup) with SIGINT ignored, and children inherit that: Python would
    # then leave Ctrl-C ignored. Ctrl-C comes from a terminal, so the child gets the disposition a terminal gives.
    proc = subprocess.Popen([*args, *(["--force"] if existing else [])], stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.gguf.*.tmp")):  # writing has started
        assert proc.poll() is None and time.monotonic() < deadline, "conversion ended before it could be stopped"
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "conversion finished too fast to interrupt"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted" in one_error_line(stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.gguf"] if existing else [])
    if existing:
        assert out.read_bytes() == b"an earlier conversion"
    assert digest(smollm_gguf) == before


def _sigint_default() -> None:  # runs in the child before exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _limit_small() -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past the limit fails with EFBIG, not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))


def test_disk_full_rlimit(tmp_path: Path) -> None:
    src = tmp_path / "src" / "tiny.gguf"
    src.parent.mkdir()
    tiny_gguf(src, quant="f16")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # The f32 output is ~60 KB: past the child's 16 KB file-size limit the write fails with EFBIG.
    before = digest(src)
    proc = subprocess.run([CONVERT, str(src), "-o", str(out_dir / "out.gguf"), "--quant", "f32", "-q"],
                          capture_output=True, text=True, timeout=300, preexec_fn=_limit_small)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert line.startswith("franken-convert: error: cannot write") and "nothing was written" in line
    assert list(out_dir.iterdir()) == []
    assert digest(src) == before


def test_disk_full_enospc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from franken_rt.checkpoint import gguf_writer
    from franken_rt.cli.convert import main

    src = tmp_path / "tiny.gguf"
    tiny_gguf(src)
    before = digest(src)
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep")
    calls = []
    real = gguf_writer.write_tensor

    def full_disk(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(gguf_writer, "write_tensor", full_disk)
    assert main([str(src), "-o", str(out), "--quant", "q8_0", "--force", "-q"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("franken-convert: error: cannot write") and "No space left on device" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf", "tiny.gguf"]
    assert out.read_bytes() == b"keep" and digest(src) == before


def test_free_space_checked_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """An output larger than the free space is refused before any tensor is written, in one line; with the room
    for exactly the file it is written."""
    import shutil
    from collections import namedtuple

    from franken_rt.cli.convert import main

    src = tmp_path / "tiny.gguf"
    tiny_gguf(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    probe = tmp_path / "probe.gguf"
    assert main([str(src), "-o", str(probe), "--quant", "q8_0", "-q"]) == 0
    size = probe.stat().st_size
    usage = namedtuple("usage", "total used free")
    room = [0]  # free space before the conversion, less what it has written since

    def disk_usage(path: object) -> tuple[int, int, int]:
        return usage(1 << 40, 0, room[0] - sum(p.stat().st_size for p in out_dir.iterdir()))

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    # less than the tensors (refused before anything is written), one byte short of the file (refused after its
    # header, before its tensors), exactly the file
    for room[0], code in [(size // 2, 2), (size - 1, 2), (size, 0)]:
        capsys.readouterr()
        assert main([str(src), "-o", str(out_dir / "out.gguf"), "--quant", "q8_0", "-q", "--force"]) == code
        err = capsys.readouterr().err
        if code:
            assert "not enough disk space" in one_error_line(err)
            assert list(out_dir.iterdir()) == []
    assert (out_dir / "out.gguf").read_bytes() == probe.read_bytes()
