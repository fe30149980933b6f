"""The kernel check program (tests/cpp/kernel_check.cpp), natively and cross-compiled for AArch64 (NEON, with and
without the dot-product extension) and RISC-V (RVV at three vector lengths, and a CPU without V), run under
qemu-user. Every table the emulated CPU can run must agree with the scalar table. The model check program
(tests/cpp/model_check.cpp) runs the forward pass on the emulated tables too. And the demo model end to end: through
the Python package on AArch64 (the core cross-built against Debian's arm64 Python, tools/arm64_python.sh), through
a static driver of the core (tests/cpp/run_model.cpp) on RISC-V."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pybind11
import pytest

import franken_rt
from franken_rt.cache import cache_dir

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


def objects(cxx: list[str], arch: str, out_dir: Path, sources: Sequence[tuple[str, list[str]]]) -> list[str]:
    """(source, flags) compiled for `arch` into out_dir, position-independent (for a program or a Python extension);
    programs built in one folder share the objects they have in common."""
    if shutil.which(cxx[0]) is None:
        pytest.fail(f"{cxx[0]} is not installed (tools/setup.sh --test installs it)")
    objs = []
    for src, flags in [*sources, *ARCH_SOURCES[arch]]:
        obj = out_dir / (Path(src).stem + ".o")
        if not obj.exists():
            subprocess.run([*cxx, "-std=c++17", "-O2", "-fPIC", "-I", str(ROOT / "csrc"), *flags, "-c",
                            str(ROOT / src), "-o", str(obj)], check=True, capture_output=True)
        objs.append(str(obj))
    return objs


def build(cxx: list[str], arch: str, out_dir: Path, extra: Sequence[tuple[str, list[str]]] = (),
          sources: Sequence[str] = CORE) -> Path:
    """kernel_check (or the program of `sources`) for `arch`; `extra`: more (source, flags), e.g. a table only the
    check builds."""
    objs = objects(cxx, arch, out_dir, [*((s, []) for s in sources), *extra])
    exe = out_dir / f"{Path(sources[-1]).stem}_{arch}"
    subprocess.run([*cxx, "-static", "-pthread", *objs, "-o", str(exe)], check=True, capture_output=True)
    return exe


@pytest.fixture(scope="module")
def model_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A build folder per architecture, shared by model_check and run_model (the core's objects compiled once)."""
    return {arch: tmp_path_factory.mktemp(f"core_{arch}") for arch in ("aarch64", "riscv64")}


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


def test_aarch64_neon_under_qemu(model_objects: dict[str, Path]) -> None:
    exe = build(["aarch64-linux-gnu-g++"], "aarch64", model_objects["aarch64"])
    with_dotprod = run(["qemu-aarch64", "-cpu", "max", str(exe)])
    assert "neon_dotprod: checked" in with_dotprod and "neon: checked" in with_dotprod
    without = run(["qemu-aarch64", "-cpu", "cortex-a53", str(exe)])  # ARMv8.0: no dot product
    assert "neon: checked" in without and "neon_dotprod" not in without


def test_riscv64_vector_under_qemu(model_objects: dict[str, Path]) -> None:
    exe = build(RISCV_CXX, "riscv64", model_objects["riscv64"])
    # The kernels are vector-length agnostic: rvv at three lengths. The scalar table does not depend on the length,
    # so it is checked once (its twins are the slowest part under qemu).
    for vlen, tables in ((128, []), (256, ["rvv"]), (512, ["rvv"])):
        out = run(["qemu-riscv64", "-cpu", f"rv64,v=true,vlen={vlen},vext_spec=v1.0", str(exe), *tables])
        assert "available: rvv scalar\n" in out and "rvv: checked" in out, vlen
        assert ("scalar: checked" in out) == (not tables), vlen
    without = run(["qemu-riscv64", "-cpu", "rv64", str(exe), "rvv"])  # no V: the table is never built, let alone run
    assert "available: scalar\n" in without and "rvv: checked" not in without


@pytest.mark.parametrize(("arch", "cxx", "qemu"), [
    ("aarch64", ["aarch64-linux-gnu-g++"], ["qemu-aarch64", "-cpu", "max"]),
    ("riscv64", RISCV_CXX, ["qemu-riscv64", "-cpu", "rv64,v=true,vlen=256,vext_spec=v1.0"]),
])
def test_model_under_qemu(tmp_path: Path, model_objects: dict[str, Path], arch: str, cxx: list[str],
                          qemu: list[str]) -> None:
    """The forward pass on the emulated CPU's tables: full-context generations, cache consistency, and sequences
    batched giving each sequence's logits bit for bit as alone."""
    out = run([*qemu, str(build(cxx, arch, model_objects[arch], sources=MODEL)), str(tmp_path)])
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


# ---- the demo model end to end on the boards' instruction sets ---------------------------------------------------

# Prose of another domain than the calibration text (Python's documentation), for the teacher-forced pass.
TEXT = ("The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a can of oil and a cloth. "
        "From the gallery he could see the fishing boats returning to the harbour, their lanterns swaying with the "
        "swell, and beyond them the dark line of the headland where the old chapel stood. In winter the storms came "
        "from the north-west, and the waves broke over the rocks with a sound like distant guns; on calm nights the "
        "only noise was the turning of the great lens and the ticking of the clockwork that drove it. He kept a log "
        "of the weather, the ships that passed and the birds that struck the glass, and on the last page of every "
        "volume he wrote the date on which he had started it and the date on which it was full. His daughter, who "
        "lived in the town, visited on Sundays with bread, newspapers and the gossip of the market, and together "
        "they would eat at the small table by the window while the gulls argued on the railings outside. When the "
        "board of trade at last sent word that the light would be automated, he packed the logs into a sea chest, "
        "gave the cat to the harbour master and took the morning ferry to the mainland, where he rented two rooms "
        "above a bakery and spent the rest of his years writing letters to newspapers about the state of the "
        "coastal charts, none of which were ever printed.")
# (arch, qemu command, the table the emulated CPU selects, greedy tokens, teacher-forced tokens). AArch64 runs through
# the Python package (the core cross-built against Debian's arm64 Python), RISC-V through tests/cpp/run_model.cpp
# (Debian 12 has no riscv64 Python). qemu runs vector code slowly (RVV about 5 s a token on 2 cores): the counts keep
# the four runs near 5 minutes.
BOARDS = [
    ("aarch64", ["qemu-aarch64", "-cpu", "max"], "neon_dotprod", 8, 256),
    ("aarch64", ["qemu-aarch64", "-cpu", "cortex-a53"], "neon", 8, 32),
    ("riscv64", ["qemu-riscv64", "-cpu", "rv64,v=true,vlen=256,vext_spec=v1.0"], "rvv", 4, 16),
    ("riscv64", ["qemu-riscv64", "-cpu", "rv64"], "scalar", 4, 16),
]
TEACHER_TOKENS = max(b[4] for b in BOARDS)
CONTEXT = 512
RUN_MODEL = [s for s in MODEL if s != "tests/cpp/model_check.cpp"] + ["tests/cpp/run_model.cpp"]
# The Python extension: the core as CMakeLists.txt builds it, and the bindings.
EXTENSION = [*(s for s in MODEL if s != "tests/cpp/model_check.cpp"), "csrc/tokenizer/bpe.cpp"]
BINDINGS = ["csrc/bindings.cpp", "csrc/testing.cpp"]
# What the package runs under emulation: greedy at reference precision, then the default path's top-1 after each
# token of the text (printed as JSON).
ON_BOARD = """
import json, sys
job = json.loads(open(sys.argv[1]).read())
sys.path[:0] = job["path"]
import franken_rt
ref = franken_rt.load(job["model"], threads=2, n_ctx=job["ctx"], activations="f32", kv_cache="f32")
greedy = list(ref.generate_tokens(job["prompt"], max_tokens=job["greedy"], temperature=0, ignore_eos=True))
del ref
model = franken_rt.load(job["model"], threads=2, n_ctx=job["ctx"])
top1 = model.logits(job["text"]).argmax(axis=1).tolist()
print(json.dumps({"kernels": model.kernels, "greedy": greedy, "top1": top1}))
"""


@pytest.fixture(scope="module")
def demo_on_x86(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """x86's tokens through the Python package: greedy at reference precision, the reference's top-1 after each token
    of TEXT, and the default path's top-1 of x86's best table and of its scalar table; and the demo model as
    run_model reads it (a spec file)."""
    ref = franken_rt.load(smollm_gguf, threads=2, n_ctx=CONTEXT, activations="f32", kv_cache="f32")
    prompt = ref.tokenize("The capital of France is")
    greedy = list(ref.generate_tokens(prompt, max_tokens=max(b[3] for b in BOARDS), temperature=0,
                                      ignore_eos=True))
    text = ref.tokenize(TEXT)[:TEACHER_TOKENS]
    assert len(text) == TEACHER_TOKENS
    top1 = {"reference": ref.logits(text).argmax(axis=1).tolist()}
    for kernels in ("", "scalar"):
        model = franken_rt.load(smollm_gguf, threads=2, n_ctx=CONTEXT, kernels=kernels)
        top1[kernels or model.kernels] = model.logits(text).argmax(axis=1).tolist()
    c, ckpt = model.config, model.checkpoint
    files = sorted({t.file for t in ckpt.tensors.values()})
    lines = [f"config {c.n_layers} {c.dim} {c.n_heads} {c.n_kv_heads} {c.head_dim} {c.ffn_dim} {c.vocab_size} "
             f"{c.norm_eps!r} {int(ckpt.rope_interleaved)} {CONTEXT} 2",
             "inv_freq " + " ".join(repr(float(f)) for f in c.inv_freq()),
             "plan " + " ".join(map(str, model.layer_plan)),
             *(f"file {f}" for f in files),
             *(f"tensor {t.name} {files.index(t.file)} {t.offset} {int(t.dtype)} {' '.join(map(str, t.shape))}"
               for t in ckpt.tensors.values()),
             "prompt " + " ".join(map(str, prompt))]
    spec = tmp_path_factory.mktemp("boards") / "demo.spec"
    spec.write_text("\n".join(lines) + "\n")
    return {"model": smollm_gguf, "spec": spec, "prompt": prompt, "greedy": greedy, "top1": top1, "text": text}


@pytest.fixture(scope="module")
def arm64_python(model_objects: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(Debian's arm64 Python folder, a folder holding franken_rt with its core cross-built for that Python)."""
    root = cache_dir() / "arm64-python"
    if not (root / "usr/bin/python3.11").is_file():
        pytest.fail(f"no arm64 Python in {root}: run tools/arm64_python.sh (tools/setup.sh --test does)")
    includes = ["-I", pybind11.get_include(), "-I", str(root / "usr/include"), "-I",
                str(root / "usr/include/python3.11"), "-fvisibility=hidden"]
    cxx = ["aarch64-linux-gnu-g++"]
    objs = objects(cxx, "aarch64", model_objects["aarch64"],
                   [*((s, []) for s in EXTENSION), *((s, includes) for s in BINDINGS)])
    pkg = tmp_path_factory.mktemp("arm64_package")
    # The installed package's Python files (the checkout's, in development), without the x86 core.
    shutil.copytree(Path(franken_rt.__file__).parent, pkg / "franken_rt",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    suffix = ".cpython-311-aarch64-linux-gnu.so"  # Debian 12's Python 3.11 (importlib.machinery.EXTENSION_SUFFIXES)
    subprocess.run([*cxx, "-shared", "-pthread", *objs, "-o", str(pkg / "franken_rt" / f"_core{suffix}")],
                   check=True, capture_output=True)
    return root, pkg


@pytest.fixture(scope="module")
def run_model_riscv64(model_objects: dict[str, Path]) -> Path:
    return build(RISCV_CXX, "riscv64", model_objects["riscv64"], sources=RUN_MODEL)


def tokens_from_driver(qemu: list[str], exe: Path, spec: Path, n_greedy: int) -> dict:
    out = {}
    for mode, key in ((["greedy", str(n_greedy)], "greedy"), (["top1"], "top1")):
        proc = subprocess.run([*qemu, str(exe), str(spec), *mode], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        kernels = re.search(r"^kernels: (\S+)$", proc.stdout, re.M)
        tokens = re.search(r"^tokens:((?: \d+)*)$", proc.stdout, re.M)
        assert kernels and tokens, proc.stdout
        out |= {"kernels": kernels.group(1), key: [int(t) for t in tokens.group(1).split()]}
    return out


def agreement(a: list[int], b: list[int]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


@pytest.mark.parametrize(("arch", "qemu", "table", "n_greedy", "n_teacher"), BOARDS, ids=[b[2] for b in BOARDS])
def test_demo_model_on_emulated_boards(request: pytest.FixtureRequest, demo_on_x86: dict, arch: str,
                                       qemu: list[str], table: str, n_greedy: int, n_teacher: int,
                                       tmp_path: Path) -> None:
    """The demo model (Q4_1) under qemu-user: reference-precision greedy tokens equal x86's; and the default path,
    teacher-forced, predicts the reference's top-1 as often as x86's own tables do, give or take two tokens.

    Not "equals x86's default path": 8-bit activations turn the tables' different float summation orders into
    different roundings, and on this text x86's best and scalar tables themselves agree on about 96% of the top-1
    tokens (the same C++ scalar code built by clang for RISC-V on 29 of the first 32). docs/device.md has the
    figures."""
    x86 = demo_on_x86
    text = x86["text"][:n_teacher]
    if arch == "aarch64":
        root, pkg = request.getfixturevalue("arm64_python")
        job = tmp_path / "job.json"
        job.write_text(json.dumps({"path": [str(pkg), str(root / "site")], "model": str(x86["model"]),
                                   "ctx": CONTEXT, "prompt": x86["prompt"], "greedy": n_greedy, "text": text}))
        proc = subprocess.run([*qemu, str(root / "usr/bin/python3.11"), "-c", ON_BOARD, str(job)], cwd=tmp_path,
                              env={**os.environ, "QEMU_LD_PREFIX": str(root)}, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
        spec = tmp_path / "spec"
        spec.write_text(x86["spec"].read_text() + "text " + " ".join(map(str, text)) + "\n")
        got = tokens_from_driver(qemu, request.getfixturevalue("run_model_riscv64"), spec, n_greedy)
    assert got["kernels"] == table
    assert got["greedy"] == x86["greedy"][:n_greedy]
    reference = x86["top1"]["reference"][:n_teacher]
    ours = agreement(got["top1"], reference)
    x86_tables = {k: agreement(v[:n_teacher], reference) for k, v in x86["top1"].items() if k != "reference"}
    print(f"{table}: top-1 of the reference {ours:.3f} over {n_teacher} tokens; x86 {x86_tables}; x86's default "
          f"path {agreement(got['top1'], x86['top1'][next(iter(x86_tables))][:n_teacher]):.3f}")
    assert ours >= min(x86_tables.values()) - 2 / n_teacher, (ours, x86_tables)
