"""franken-run MODEL -p PROMPT: stream generated text to stdout; speed and memory to stderr."""

from __future__ import annotations

import argparse
import sys

import franken_rt
from franken_rt.checkpoint.layer_plan import parse_plan
from franken_rt.cli import ArgumentParser, user_errors
from franken_rt.errors import FrankenError
from franken_rt.eval.memory import peak_rss_mib


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="franken-run", description="Generate text with a LLaMA-family model.")
    ap.add_argument("model", help="GGUF file or Hugging Face model folder")
    ap.add_argument("-p", "--prompt", default=None, help="prompt text (with -i: the first user message)")
    ap.add_argument("-n", "--n-predict", type=int, default=128, help="tokens to generate (default 128)")
    # Sampling left out: the model file's recommendation (general.sampling.*), else measured fallbacks.
    ap.add_argument("--temp", type=float, default=None,
                    help="temperature; 0 is greedy (default: the model's, else 0.2)")
    ap.add_argument("--top-k", type=int, default=None, help="0 disables (default: the model's, else 40)")
    ap.add_argument("--top-p", type=float, default=None, help="1 disables (default: the model's, else 0.9)")
    ap.add_argument("--min-p", type=float, default=None, help="0 disables (default: the model's, else 0.05)")
    ap.add_argument("--repeat-penalty", type=float, default=None, help="1 disables (default: the model's, else 1)")
    ap.add_argument("--repeat-last-n", type=int, default=None, help="tokens the penalty looks back (default 64)")
    ap.add_argument("--seed", type=int, default=None, help="random seed, for reproducible sampling")
    ap.add_argument("--threads", "-t", type=int, default=None,
                    help="threads (default: physical cores, among --cpus if given)")
    ap.add_argument("--cpus", default=None, metavar="LIST",
                    help="pin the threads to these CPUs, e.g. 4-7 (a big.LITTLE board's big cores); thread t runs on "
                         "the t-th, one per physical core first")
    ap.add_argument("--max-memory", default=None, metavar="SIZE",
                    help="memory for weights + KV cache + buffers, e.g. 512M or 1.5GB: picks the context and KV "
                         "cache type that fit and says which (an explicit --ctx/--kv-cache is kept, refused if too "
                         "big)")
    ap.add_argument("--ctx", "-c", type=int, default=None, help="context size in tokens (default min(model, 2048))")
    ap.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    ap.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence tokens")
    ap.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    ap.add_argument("-i", "--interactive", action="store_true", help="interactive chat loop (implies --chat)")
    ap.add_argument("--kernels", default="", help="force a kernel path: scalar, avx2, ... (default: best)")
    ap.add_argument("--activations", default="q8", choices=["q8", "f32"],
                    help="q8: integer kernels (default); f32: float activations, reference precision")
    ap.add_argument("--kv-cache", default=None, choices=["f16", "q8", "f32"],
                    help="KV cache storage: f16 (default), q8 (half the memory), f32")
    ap.add_argument("--draft", default=None, metavar="{lookup,self,PATH}",
                    help="speculative decoding (same output, faster when drafts are right): lookup (text that "
                         "followed the last tokens earlier: quoting, editing), self (this model with the shallower "
                         "--draft-plan), or a smaller model file with the same vocabulary")
    ap.add_argument("--draft-max", type=int, default=8, help="most tokens drafted per step (default 8)")
    ap.add_argument("--draft-plan", default=None,
                    help="stored blocks the self draft runs, e.g. 0-21,28,29 (default: the file's franken.draft_plan, "
                         "else measured: a quarter of the blocks left out where they turn the residual stream least)")
    return ap.parse_args(argv)


def stream(model, prompt, args: argparse.Namespace, pieces: list[str] | None = None) -> str:  # noqa: ANN001
    """Generate, writing each piece to stdout as it comes; `pieces` collects them (what was said before a Ctrl-C)."""
    pieces = [] if pieces is None else pieces
    for piece in model.generate(
        prompt, max_tokens=args.n_predict, temperature=args.temp, top_k=args.top_k, top_p=args.top_p,
        min_p=args.min_p, repetition_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
        seed=args.seed, stop=args.stop, ignore_eos=args.ignore_eos, draft=args.draft, draft_max=args.draft_max,
        draft_plan=args.draft_plan,
    ):
        sys.stdout.write(piece)
        sys.stdout.flush()
        pieces.append(piece)
    return "".join(pieces)


def report(model) -> None:  # noqa: ANN001
    s = model.last_stats
    print(
        f"\n[prompt: {s.prompt_tokens} tokens, {s.prompt_tps:.1f} tok/s | generation: {s.generated_tokens} tokens, "
        f"{s.generate_tps:.1f} tok/s | threads {model.threads}, kernels {model.kernels} | "
        f"peak RSS {peak_rss_mib():.0f} MiB | stop: {s.finish_reason}"
        + (f" | drafts accepted {s.accepted_tokens}/{s.drafted_tokens}" if s.drafted_tokens else "")
        + (f" | draft agrees {s.draft_agreement:.0%} with the model" if s.draft_agreement is not None else "")
        + (", too rarely to pay: not drafting" if s.draft_off else "") + "]",
        file=sys.stderr,
    )


def fit_context(model, messages: list[dict[str, str]], reserve: int) -> int:  # noqa: ANN001
    """Drop the oldest turns (never a system message, never the newest message) until the rendered conversation
    leaves `reserve` tokens of the context for the reply; returns how many messages went."""
    dropped = 0
    while len(model.prompt_tokens(model.chat_prompt(messages))) + reserve > model.n_ctx:
        oldest = next((i for i, m in enumerate(messages[:-1]) if m["role"] != "system"), None)
        if oldest is None:
            break  # only the newest message is left: generate() says it does not fit
        del messages[oldest]
        dropped += 1
    return dropped


def interactive(model, args: argparse.Namespace) -> int:  # noqa: ANN001
    """A chat: the conversation so far is the prompt of each turn (its cache reused: only the new turn runs)."""
    print("[chat: Enter sends; Ctrl-C stops a reply; Ctrl-D or /exit leaves]", file=sys.stderr)
    messages: list[dict[str, str]] = []
    first = args.prompt
    while True:
        if first is not None:
            user, first = first, None
            print(f"> {user}", file=sys.stderr)
        else:
            try:
                user = input("> ")
            except EOFError:
                print()  # so the shell's prompt starts on a line of its own
                return 0
            except KeyboardInterrupt:  # at the prompt, as Python's REPL: a fresh line
                print()
                continue
        if not user.strip():
            continue
        if user.strip() in ("/exit", "/quit"):
            return 0
        messages.append({"role": "user", "content": user})
        dropped = fit_context(model, messages, min(args.n_predict, model.n_ctx // 2))
        if dropped:
            print(f"[the conversation outgrew the context of {model.n_ctx} tokens: dropped its {dropped} oldest "
                  "messages]", file=sys.stderr)
        pieces: list[str] = []
        try:
            stream(model, model.chat_prompt(messages), args, pieces)
        except KeyboardInterrupt:  # stop this reply, keep what it said, back to the prompt
            print("\n[stopped]", file=sys.stderr)
        except FrankenError as e:  # e.g. one message longer than the whole context
            print(f"franken-run: error: {e}", file=sys.stderr)
            messages.pop()
            continue
        print()
        report(model)
        messages.append({"role": "assistant", "content": "".join(pieces)})


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.n_predict < 0:
        raise FrankenError(f"-n must be >= 0, got {args.n_predict}")
    if args.draft_max < 1:
        raise FrankenError(f"--draft-max must be >= 1, got {args.draft_max}")
    if args.draft_plan is not None and args.draft != "self":
        raise FrankenError("--draft-plan is for --draft self")
    model = franken_rt.load(args.model, threads=args.threads, n_ctx=args.ctx, kernels=args.kernels,
                            activations=args.activations, kv_cache=args.kv_cache,
                            sequences=2 if args.draft == "self" else 1,  # the draft's own KV cache
                            cpus=args.cpus, max_memory=args.max_memory)
    if model.memory_plan is not None:
        print(f"[--max-memory: {model.memory_plan.describe()}]", file=sys.stderr)
    if args.draft_plan is not None:
        args.draft_plan = parse_plan(args.draft_plan, model.config.n_layers)
    if args.draft is not None:
        model.drafter(args.draft, args.draft_plan)  # a bad draft option fails here, before any output
    if args.interactive:
        if not model.tokenizer.chat_template:
            raise FrankenError("-i needs a model with a chat template; this one has none (use -p for plain text)")
        return interactive(model, args)
    if args.prompt is None:
        raise FrankenError("no prompt: give -p PROMPT (or -i for a chat)")
    prompt = model.chat_prompt([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    stream(model, prompt, args)
    print()
    report(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
