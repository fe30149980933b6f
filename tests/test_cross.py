"""The kernel check program (tests/cpp/kernel_check.cpp), natively and cross-compiled for AArch64 (NEON, with and
without the dot-product extension) and RISC-V (RVV at three vector lengths, and a CPU without V), run under
qemu-user. Every table the emulated CPU can run must agree with the scalar table. The model check program
(tests/cpp/model_check.cpp) runs the forward pass on the emulated tables too."""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # compiles the kernels for three architectures, runs them under qemu

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ["csrc/kernels/dispatch.cpp", "csrc/kernels/formats.cpp", "csrc/kernels/generic/scalar.cpp"]
CORE = [*KERNELS, "tests/cpp/kernel_check.cpp"]
# model_check: the forward pass end to end (tiny random models, every table), batched sequences included.
MODEL = [*KERNELS, "csrc/runtime/mapped_file.cpp", "csrc/runtime/thread_pool.cpp", "csrc/model/weights.cpp",
         "csrc/model/model.cpp", "csrc/model/profile.cpp", "csrc/model/sampler.cpp", "tests/cpp/model_check.cpp"]
ARCH_SOURCES = {
    "x86_64": [("csrc/kernels/x86/avx2.cpp", ["-mavx2", "-mfma", "-mf16c"]),
               ("csrc/kernels/x86/avx512_vnni.cpp", ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw",
                                                     "-mavx512vl", "-mavx512vnni"])],
    "aarch64": [("csrc/kernels/arm/neon.cpp", []), ("csrc/kernels/arm/neon_dotprod.cpp", ["-march=armv8.2-a+dotprod"])],
    "riscv64": [("csrc/kernels/riscv/rvv.cpp", ["-march=rv64gcv"])],
}
# GCC 12 has no RVV intrinsics (riscv_vector.h): RISC-V is built by clang, with the GNU cross toolchain's libraries.
RISCV_CXX = ["clang++-16", "--target=riscv64-linux-gnu", "-march=rv64gc"]


def build(cxx: list[str], arch: str, out_dir: Path, extra: Sequence[tuple[str, list[str]]] = (),
          sources: Sequence[str] = CORE) -> Path:
    """kernel_check (or the program of `sources`) for `arch`; `extra`: more (source, flags), e.g. a table only the
    check builds."""
    if shutil.which(cxx[0]) is None:
        pytest.fail(f"{cxx[0]} is not installed (tools/setup.sh --test installs it)")
    objs = []
    for src, flags in [(s, []) for s in sources] + ARCH_SOURCES[arch] + list(extra):
        obj = out_dir / (Path(src).stem + ".o")
        subprocess.run([*cxx, "-std=c++17", "-O2", "-I", str(ROOT / "csrc"), *flags, "-c", str(ROOT / src), "-o",
                        str(obj)], check=True, capture_output=True)
        objs.append(str(obj))
    exe = out_dir / f"{Path(sources[-1]).stem}_{arch}"
    subprocess.run([*cxx, "-static", "-pthread", *objs, "-o", str(exe)], check=True, capture_output=True)
    return exe


def shared_symbols(obj: Path, nm: str) -> list[str]:
    """The weak (COMDAT) definitions of an object: inline functions the linker may take from this object for every
    caller. An architecture file's copies would carry its extra instructions into code that runs on any CPU."""
    out = subprocess.run([nm, "--defined-only", "-C", str(obj)], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.split(" ")[1:2] in (["W"], ["V"], ["u"])
            and "__gxx_personality" not in line]


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed, 0 failed" in proc.stdout
    return proc.stdout


def test_native(tmp_path: Path) -> None:
    arch = platform.machine()
    out = run([str(build(["g++"], arch, tmp_path))])
    assert "scalar: checked" in out
    if arch == "x86_64":
        assert "avx2: checked" in out  # this CI machine has AVX2


def test_x86_vnni_kernels_with_emulated_vpdpbusd(tmp_path: Path) -> None:
    """The 256-bit VNNI variant of the x86 kernels (what the avx512_vnni table runs, but its 512-bit tiles) on any
    AVX2 CPU: tests/cpp/vnni_emulated.cpp builds it with an exact AVX2 emulation of VPDPBUSD."""
    if platform.machine() != "x86_64":
        pytest.skip("x86 kernels")
    extra = [("tests/cpp/vnni_emulated.cpp", ["-mavx2", "-mfma", "-mf16c"])]
    exe = build(["g++", "-DFRANKEN_EXTRA_TABLE"], "x86_64", tmp_path, extra)
    assert "avx512_vnni (256-bit, emulated VPDPBUSD): checked" in run([str(exe)])


def test_aarch64_neon_under_qemu(tmp_path: Path) -> None:
    exe = build(["aarch64-linux-gnu-g++"], "aarch64", tmp_path)
    with_dotprod = run(["qemu-aarch64", "-cpu", "max", str(exe)])
    assert "neon_dotprod: checked" in with_dotprod and "neon: checked" in with_dotprod
    without = run(["qemu-aarch64", "-cpu", "cortex-a53", str(exe)])  # ARMv8.0: no dot product
    assert "neon: checked" in without and "neon_dotprod" not in without


def test_riscv64_vector_under_qemu(tmp_path: Path) -> None:
    exe = build(RISCV_CXX, "riscv64", tmp_path)
    for vlen in (128, 256, 512):  # the kernels are vector-length agnostic
        out = run(["qemu-riscv64", "-cpu", f"rv64,v=true,vlen={vlen},vext_spec=v1.0", str(exe)])
        assert "rvv: checked" in out and "scalar: checked" in out, vlen
    without = run(["qemu-riscv64", "-cpu", "rv64", str(exe)])  # no V: the table is never built, let alone run
    assert "scalar: checked" in without and "rvv" not in without


@pytest.mark.parametrize(("arch", "cxx", "qemu"), [
    ("aarch64", ["aarch64-linux-gnu-g++"], ["qemu-aarch64", "-cpu", "max"]),
    ("riscv64", RISCV_CXX, ["qemu-riscv64", "-cpu", "rv64,v=true,vlen=256,vext_spec=v1.0"]),
])
def test_model_under_qemu(tmp_path: Path, arch: str, cxx: list[str], qemu: list[str]) -> None:
    """The forward pass on the emulated CPU's tables: full-context generations, cache consistency, and sequences
    batched giving each sequence's logits bit for bit as alone."""
    out = run([*qemu, str(build(cxx, arch, tmp_path, sources=MODEL)), str(tmp_path)])
    table = "neon_dotprod" if arch == "aarch64" else "rvv"
    assert f"Q4_0/{table}: sequences batched == each alone, bit for bit" in out


@pytest.mark.parametrize(("arch", "nm"), [("x86_64", "nm"), ("aarch64", "aarch64-linux-gnu-nm"),
                                          ("riscv64", "riscv64-linux-gnu-nm")])
def test_architecture_files_share_no_code(tmp_path: Path, arch: str, nm: str) -> None:
    """Kernel files built with extra instruction sets define only their own (internal) functions."""
    if arch == "x86_64" and platform.machine() != "x86_64":
        pytest.skip("the x86 files are built only on x86")
    cxx = {"x86_64": ["g++"], "aarch64": ["aarch64-linux-gnu-g++"], "riscv64": RISCV_CXX}[arch]
    build(cxx, arch, tmp_path)
    for src, _ in ARCH_SOURCES[arch]:
        assert shared_symbols(tmp_path / (Path(src).stem + ".o"), nm) == [], src
