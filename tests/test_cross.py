"""The kernel check program (tests/cpp/kernel_check.cpp), natively and cross-compiled for AArch64 (NEON, with and
without the dot-product extension) and RISC-V (scalar), run under qemu-user. Every table the emulated CPU can run
must agree with the scalar table."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ["csrc/kernels/dispatch.cpp", "csrc/kernels/generic/scalar.cpp", "tests/cpp/kernel_check.cpp"]
ARCH_SOURCES = {
    "x86_64": [("csrc/kernels/x86/avx2.cpp", ["-mavx2", "-mfma", "-mf16c"]),
               ("csrc/kernels/x86/avx512_vnni.cpp", ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw",
                                                     "-mavx512vl", "-mavx512vnni"])],
    "aarch64": [("csrc/kernels/arm/neon.cpp", []), ("csrc/kernels/arm/neon_dotprod.cpp", ["-march=armv8.2-a+dotprod"])],
    "riscv64": [],
}


def build(cxx: str, arch: str, out_dir: Path) -> Path:
    if shutil.which(cxx) is None:
        pytest.fail(f"{cxx} is not installed (tools/setup.sh installs it)")
    objs = []
    for src, flags in [(s, []) for s in CORE] + ARCH_SOURCES[arch]:
        obj = out_dir / (Path(src).stem + ".o")
        subprocess.run([cxx, "-std=c++17", "-O2", "-I", str(ROOT / "csrc"), *flags, "-c", str(ROOT / src), "-o",
                        str(obj)], check=True, capture_output=True)
        objs.append(str(obj))
    exe = out_dir / f"kernel_check_{arch}"
    subprocess.run([cxx, "-static", "-pthread", *objs, "-o", str(exe)], check=True, capture_output=True)
    return exe


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed, 0 failed" in proc.stdout
    return proc.stdout


def test_native(tmp_path: Path) -> None:
    arch = platform.machine()
    out = run([str(build("g++", arch, tmp_path))])
    assert "scalar: checked" in out
    if arch == "x86_64":
        assert "avx2: checked" in out  # this CI machine has AVX2


def test_aarch64_neon_under_qemu(tmp_path: Path) -> None:
    exe = build("aarch64-linux-gnu-g++", "aarch64", tmp_path)
    with_dotprod = run(["qemu-aarch64", "-cpu", "max", str(exe)])
    assert "neon_dotprod: checked" in with_dotprod and "neon: checked" in with_dotprod
    without = run(["qemu-aarch64", "-cpu", "cortex-a53", str(exe)])  # ARMv8.0: no dot product
    assert "neon: checked" in without and "neon_dotprod" not in without


def test_riscv64_scalar_under_qemu(tmp_path: Path) -> None:
    exe = build("riscv64-linux-gnu-g++", "riscv64", tmp_path)
    out = run(["qemu-riscv64", "-cpu", "rv64", str(exe)])
    assert "scalar: checked" in out
