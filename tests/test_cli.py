"""franken-run end to end, and every bad input it must refuse with one line and exit code 2."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

import franken_rt

RUN = [str(Path(sys.executable).parent / "franken-run")]  # the installed entry point


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, *args], capture_output=True, text=True, input=stdin, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("franken-run: error:") and fragment in lines[0], lines[0]


def test_generates_and_reports_speed(smollm_gguf: Path) -> None:
    proc = run(str(smollm_gguf), "-p", "The capital of France is", "-n", "12", "--temp", "0", "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "tok/s" in proc.stderr and "peak RSS" in proc.stderr


def test_chat_and_interactive(smollm_gguf: Path) -> None:
    # reference precision: with 8-bit activations "L'..." and "The ..." are within 0.1 logit of each other here
    proc = run(str(smollm_gguf), "--chat", "-p", "What is the capital of France?", "-n", "32", "--temp", "0",
               "--activations", "f32", "--kv-cache", "f32")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    proc = run(str(smollm_gguf), "-i", "-n", "16", "--temp", "0", stdin="Say hello.\nAnd goodbye.\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("[prompt:") == 2  # one report per turn
    assert proc.stdout.endswith("> \n")  # after Ctrl-D (end of input) the shell's prompt gets a line of its own


def test_interactive_ctrl_c_stops_the_reply_not_the_chat(smollm_gguf: Path) -> None:
    proc = subprocess.Popen([*RUN, str(smollm_gguf), "-i", "-n", "4000", "--ignore-eos", "--threads", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdin and proc.stdout
    try:
        proc.stdin.write("Tell me a very long story.\n")
        proc.stdin.flush()
        proc.stdout.read(20)  # the reply is streaming (4000 tokens would take minutes)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate("/exit\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "[stopped]" in err and "Ctrl-D" in err  # the reply stopped, the chat went on to read /exit


def test_interactive_turns_carry_the_conversation_and_reuse_its_cache(smollm_gguf: Path, monkeypatch) -> None:  # noqa: ANN001
    from franken_rt.cli import run as cli

    model = franken_rt.load(smollm_gguf, threads=2, n_ctx=2048)
    prompts: list[str] = []
    render = model.chat_prompt
    monkeypatch.setattr(model, "chat_prompt", lambda messages: prompts.append(render(messages)) or prompts[-1])
    ran: list[tuple[int, int]] = []  # per turn: prompt tokens run, tokens in the prompt
    generate = model.generate

    def recording(prompt: str, **kw):  # noqa: ANN003, ANN202
        yield from generate(prompt, **kw)
        ran.append((model.last_stats.prompt_tokens, len(model.prompt_tokens(prompt))))

    monkeypatch.setattr(model, "generate", recording)
    monkeypatch.setattr("sys.stdin", io.StringIO("My name is Ann.\nWhat is two plus two?\nWhat is my name?\n"))
    args = cli.parse_args([str(smollm_gguf), "-i", "-n", "12", "--temp", "0"])
    assert cli.interactive(model, args) == 0
    third = prompts[-1]
    assert "My name is Ann." in third and "What is two plus two?" in third and third.count("<|im_start|>assistant") == 3
    assert len(ran) == 3 and ran[2][0] < ran[2][1] // 2  # turns 1 and 2 came from the cache


def test_interactive_drops_the_oldest_turns_when_the_context_is_full(smollm_gguf: Path) -> None:
    from franken_rt.cli.run import fit_context

    model = franken_rt.load(smollm_gguf, threads=1, n_ctx=160)
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(6):
        messages += [{"role": "user", "content": f"Question number {i} about a topic?"},
                     {"role": "assistant", "content": f"Answer number {i}, quite short."}]
    messages.append({"role": "user", "content": "Last question?"})
    dropped = fit_context(model, messages, 32)
    assert dropped > 0 and messages[0]["role"] == "system" and messages[-1]["content"] == "Last question?"
    assert len(model.prompt_tokens(model.chat_prompt(messages))) + 32 <= model.n_ctx


def test_entry_point_installed() -> None:
    script = Path(sys.executable).parent / "franken-run"
    assert script.is_file(), "franken-run is not installed beside this Python"
    assert subprocess.run([str(script), "--help"], capture_output=True).returncode == 0


def write_gguf(path: Path, arch: str = "llama", tensor_type: gguf.GGMLQuantizationType | None = None) -> Path:
    w = gguf.GGUFWriter(path, arch=arch)
    w.add_block_count(1)
    if tensor_type is None:
        w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    else:
        raw = np.zeros((8, 110), dtype=np.uint8)  # 8 rows of one 256-element Q3_K block
        w.add_tensor("token_embd.weight", raw, raw_dtype=tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_bad_paths_and_files(tmp_path: Path) -> None:
    assert_user_error(run(str(tmp_path / "nope.gguf"), "-p", "hi"), "no such file")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_user_error(run(str(text), "-p", "hi"), "not a GGUF file")
    assert_user_error(run(str(tmp_path), "-p", "hi"), "config.json")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 20)
    assert_user_error(run(str(truncated), "-p", "hi"), "corrupt")


def test_unsupported_architecture_and_type(tmp_path: Path) -> None:
    assert_user_error(run(str(write_gguf(tmp_path / "a.gguf", arch="gpt2")), "-p", "hi"), "unsupported architecture")
    bad = write_gguf(tmp_path / "b.gguf", tensor_type=gguf.GGMLQuantizationType.Q3_K)  # not (yet) a registry row
    assert_user_error(run(str(bad), "-p", "hi"), "unsupported type")


def test_bad_runtime_arguments(smollm_gguf: Path) -> None:
    m = str(smollm_gguf)
    assert_user_error(run(m, "-p", "word " * 100, "--ctx", "32"), "context")
    assert_user_error(run(m, "-p", ""), "empty")
    assert_user_error(run(m, "-p", "hi", "--temp", "-1"), "temperature")
    assert_user_error(run(m, "-p", "hi", "--top-p", "0"), "top-p")
    assert_user_error(run(m, "-p", "hi", "--threads", "4096"), "threads")
    assert_user_error(run(m, "-p", "hi", "--ctx", "100000000"), "context")
    bad_kernels = run(m, "-p", "hi", "--kernels", "foo")  # names the choices, and does not blame the model file
    assert_user_error(bad_kernels, "kernel path 'foo' is not available on this CPU or build; choose one of")
    assert m not in bad_kernels.stderr and "scalar" in bad_kernels.stderr


def test_requantizing_warns(smollm_gguf: Path, tmp_path: Path) -> None:
    convert = str(Path(sys.executable).parent / "franken-convert")
    out = subprocess.run([convert, str(smollm_gguf), "-o", str(tmp_path / "q8.gguf"), "--quant", "f16", "-q",
                          "--tensor-type", "blk\\.0\\.ffn_up=q4_0", "--rounding", "rtn"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    warning = [ln for ln in out.stderr.splitlines() if "warning" in ln]
    assert len(warning) == 1 and "requantizes" in warning[0] and "(1 x Q4_1 -> Q4_0)" in warning[0], out.stderr
    again = subprocess.run([convert, str(tmp_path / "q8.gguf"), "-o", str(tmp_path / "f16.gguf"), "--quant", "f16",
                            "-q"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "warning" not in again.stderr  # dequantizing loses nothing: no warning


def test_bad_options_are_one_line(smollm_gguf: Path) -> None:
    assert_user_error(run(str(smollm_gguf), "-p", "hi", "--no-such-option"), "unrecognized arguments")
    assert_user_error(run(str(smollm_gguf), "-p", "hi", "--temp", "warm"), "invalid float value")
    assert_user_error(run(), "required")


@pytest.mark.parametrize("flag", ["-n", "--top-k"])
def test_negative_counts(smollm_gguf: Path, flag: str) -> None:
    assert_user_error(run(str(smollm_gguf), "-p", "hi", flag, "-3"), "")
