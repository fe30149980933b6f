"""The Python face of the core model: tokenize, logits, generate (streaming text pieces)."""

from __future__ import annotations

import atexit
import numbers
import operator
import os
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from franken_rt import _core
from franken_rt.checkpoint import Checkpoint, read_checkpoint
from franken_rt.checkpoint.layer_plan import check_plan, draft_plan
from franken_rt.checkpoint.validate import check_finite
from franken_rt.errors import FrankenError
from franken_rt.prefix import reusable_prefix
from franken_rt.resources import (
    MemoryPlan,
    allowed_cpus,
    check_cpus,
    check_memory,
    one_per_core,
    parse_cpus,
    physical_cores,
    plan_memory,
    release_free_memory,
)
from franken_rt.sampling import SamplingParams, recommended_sampling
from franken_rt.speculative import Drafter, DraftLength, LookupDrafter, ModelDrafter, model_drafter, self_drafter
from franken_rt.text_stream import StopText
from franken_rt.units import parse_size

if TYPE_CHECKING:  # numpy only for the analysis results: importing it would add over 10 MiB to every generation
    import numpy as np

DEFAULT_CTX = 2048
MIN_SAMPLE = 16  # fewest sampled tokens a drafter's agreement is measured on (Model._measured)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    generated_tokens: int = 0
    decode_steps: int = 0  # forward passes after the prompt's (each gives one token, or more with drafts)
    decode_tokens: int = 0  # tokens those passes gave (the first generated token comes from the prompt's pass)
    decode_seconds: float = 0.0
    drafted_tokens: int = 0   # speculative decoding: tokens proposed by the drafter and checked
    accepted_tokens: int = 0  # ... and the ones the model kept
    draft_agreement: float | None = None  # a model drafter's measured agreement with the model (Model.drafter)
    draft_off: bool = False  # ... too low for drafting to pay: it did not draft
    finish_reason: str = ""  # "eos", "stop", "length" or "context"

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def generate_tps(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


ACTIVATIONS = ("q8", "f32")
FLOAT_ROLES = ("qkv", "attn_output", "gate_up", "down", "output")  # Config::float_act_roles bit order
KV_CACHE_TYPES = {"f32": 0, "f16": 1, "q8": 8}  # GGUF type ids of F32, F16, Q8_0


def _core_config(ckpt: Checkpoint, n_ctx: int, threads: int, layer_plan: Sequence[int] | None) -> _core.Config:
    c = ckpt.config
    cc = _core.Config()
    cc.n_layers, cc.dim, cc.n_heads, cc.n_kv_heads = c.n_layers, c.dim, c.n_heads, c.n_kv_heads
    cc.head_dim, cc.ffn_dim, cc.vocab_size, cc.norm_eps = c.head_dim, c.ffn_dim, c.vocab_size, c.norm_eps
    cc.rope_interleaved = ckpt.rope_interleaved
    cc.inv_freq = c.inv_freq()
    cc.layer_plan = list(layer_plan or [])
    cc.n_ctx, cc.n_threads = n_ctx, threads
    return cc


class Model:
    """A loaded model with its KV cache. Not thread-safe: use one Model per thread."""

    def __init__(
        self,
        ckpt: Checkpoint,
        threads: int | None = None,
        n_ctx: int | None = None,
        kernels: str = "",
        layer_plan: Sequence[int] | None = None,
        activations: str = "q8",
        kv_cache: str | None = None,
        check_values: bool = True,
        sequences: int = 1,
        float_roles: Sequence[str] = (),
        cpus: Sequence[int] | str | None = None,
        max_memory: int | str | None = None,
    ) -> None:
        """`activations`: "q8" (default) multiplies quantized weights by activations quantized to 8-bit blocks,
        with integer kernels; "f32" keeps activations in float, the reference-precision path.
        `kv_cache`: "f16" (default), "q8" (8-bit blocks: half the memory) or "f32" (reference precision).
        `cpus`: the CPUs to run on, as a list or a CPU list string ("4-7"): thread t is pinned to the t-th (one CPU
        per physical core first), and the default thread count is the physical cores among them.
        `max_memory`: bytes (or a size such as "512M", "1.5GB") for the weights, KV cache and buffers together: the
        context (up to the default) and KV cache type are chosen to fit (`memory_plan` says which); an explicit
        `n_ctx` or `kv_cache` is kept, and refused if it cannot fit.
        `layer_plan`: stored block indices in execution order; default the checkpoint's own plan (or each block
        once).
        `float_roles`: with q8 activations, the roles of FLOAT_ROLES whose matrices still take float inputs (a
        knob for measuring sensitivity to 8-bit rounding; docs/quality.md).
        `sequences`: independent KV caches of n_ctx each (a server's slots, run together by `step_rows`); the
        generation methods use sequence 0.
        `check_values`: scan the weights for NaN or infinite values and block scales first (a vectorized pass over
        the mapped file, ~60 ms for a 135M Q4_1 model)."""
        for name, value in (("threads", threads), ("n_ctx", n_ctx), ("sequences", sequences)):
            if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool)):
                raise FrankenError(f"{name} must be an integer, got {value!r}")
        if cpus is None:
            allowed = allowed_cpus()
        elif isinstance(cpus, str):
            allowed = parse_cpus(cpus)
        else:
            if not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in cpus):
                raise FrankenError(f"cpus must be CPU numbers, got {list(cpus)!r}")
            allowed = check_cpus(list(dict.fromkeys(int(c) for c in cpus)))
        if threads is not None and not 1 <= threads <= len(allowed):
            where = "the CPUs given" if cpus is not None else "this machine's CPUs"
            raise FrankenError(f"threads must be between 1 and {len(allowed)} ({where}), got {threads}")
        if not 1 <= sequences <= 256:
            raise FrankenError(f"sequences must be between 1 and 256, got {sequences}")
        if n_ctx is not None and not 1 <= n_ctx <= ckpt.config.context_length:
            raise FrankenError(f"context must be between 1 and the model's {ckpt.config.context_length}, got {n_ctx}")
        self.checkpoint = ckpt
        self.config = ckpt.config
        self.sequences = sequences
        self.tokenizer = ckpt.tokenizer
        files = sorted({t.file for t in ckpt.tensors.values()})
        index = {f: i for i, f in enumerate(files)}
        specs = [
            _core.TensorSpec(t.name, index[t.file], t.offset, int(t.dtype), list(t.shape))
            for t in ckpt.tensors.values()
        ]
        if kernels and kernels not in _core.available_kernels():  # the CPU's choice, not the model file's fault
            raise FrankenError(f"kernel path {kernels!r} is not available on this CPU or build; choose one of "
                               f"{', '.join(_core.available_kernels())}")
        if activations not in ACTIVATIONS:
            raise FrankenError(f"activations must be one of {', '.join(ACTIVATIONS)}, got {activations!r}")
        if layer_plan is None:
            layer_plan = ckpt.layer_plan  # the file's own plan, if it has one
        else:
            layer_plan = check_plan(list(layer_plan), ckpt.config.n_layers)
        self.layer_plan = list(layer_plan) if layer_plan is not None else list(range(ckpt.config.n_layers))
        if threads is None:  # the physical cores among the CPUs this process may run on (taskset, --cpus)
            threads = physical_cores(allowed)
        if kv_cache is not None and kv_cache not in KV_CACHE_TYPES:
            raise FrankenError(f"kv_cache must be one of {', '.join(KV_CACHE_TYPES)}, got {kv_cache!r}")
        depth, weights = len(self.layer_plan), _weight_bytes(ckpt)
        self.memory_plan: MemoryPlan | None = None  # what max_memory chose
        if max_memory is not None:
            budget = parse_size(max_memory, "--max-memory") if isinstance(max_memory, str) else int(max_memory)
            if budget < 1:
                raise FrankenError(f"--max-memory must be positive, got {max_memory!r}")
            self.memory_plan = plan_memory(ckpt.config, depth, weights, budget, n_ctx, kv_cache,
                                           min(ckpt.config.context_length, DEFAULT_CTX), threads, sequences)
            n_ctx, kv_cache = self.memory_plan.n_ctx, self.memory_plan.kv_cache
        n_ctx = n_ctx if n_ctx is not None else min(ckpt.config.context_length, DEFAULT_CTX)
        kv_cache = kv_cache or "f16"
        cfg = _core_config(ckpt, n_ctx, threads, layer_plan)
        if cpus is not None:  # pinned: thread t on the t-th CPU, one per physical core first
            cfg.cpus = one_per_core(allowed)[:threads]
        self.cpus = list(cfg.cpus)
        cfg.float_activations = activations == "f32"
        cfg.kv_type = KV_CACHE_TYPES[kv_cache]
        self.kv_cache = kv_cache
        cfg.n_seq = sequences
        cfg.profile = os.environ.get("FRANKEN_PROFILE", "") not in ("", "0")
        unknown = set(float_roles) - set(FLOAT_ROLES)
        if unknown:
            raise FrankenError(f"float_roles: unknown {sorted(unknown)}; choose from {', '.join(FLOAT_ROLES)}")
        cfg.float_act_roles = sum(1 << FLOAT_ROLES.index(r) for r in set(float_roles))
        check_memory(ckpt.config, depth, n_ctx, kv_cache, threads, sequences, weights)
        if check_values:
            check_finite(ckpt)
        release_free_memory()  # before the core allocates the weights on top of the readers' freed heap
        try:
            self._core = _core.Model(cfg, [str(f) for f in files], specs, kernels)
        except _core.CoreError as e:
            raise FrankenError(f"{ckpt.source}: {e}") from None
        if cfg.profile:  # time per stage of every forward pass, printed when the process exits
            atexit.register(lambda core=self._core: print(core.profile_report(), file=sys.stderr, end=""))
        self.recommended_sampling = recommended_sampling(ckpt.metadata)  # what the model file asks for
        self._cached: list[int] = []  # tokens whose keys and values are in the cache
        self._drafters: dict[tuple, Drafter] = {}  # kept across generations: a draft model's cache is reused
        self._samples: dict[tuple[int, int], list[int]] = {}  # sample_text()'s, by (n_tokens, seed)
        self.last_stats = GenerationStats()

    # ---- properties --------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return self._core.n_ctx

    @property
    def threads(self) -> int:
        return self._core.n_threads

    @property
    def kernels(self) -> str:
        return self._core.kernels

    # ---- tokens ------------------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special=add_special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """A conversation rendered with the model's chat template, ready for the reply: the prompt text to give
        generate() (prompt_tokens() gives its ids)."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    def prompt_tokens(self, prompt: str) -> list[int]:
        """The ids generate() runs for a text prompt: tokenized with the model's special tokens, without doubling a
        BOS that the text itself begins with (a chat template that writes its own)."""
        ids = self.tokenize(prompt)
        bos = self.tokenizer.bos_id
        return ids[1:] if len(ids) > 1 and ids[0] == ids[1] == bos else ids

    # ---- evaluation --------------------------------------------------------------------------------

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits for every position of a fresh sequence: shape (len(token_ids), vocab)."""
        return self._fresh(token_ids, lambda ids: self._core.eval(ids, all_logits=True))

    def nll(self, token_ids: Sequence[int]) -> np.ndarray:
        """Negative log-likelihood (nats) of each token after the first, in a fresh context: len - 1 values."""
        return self._fresh(token_ids, self._core.score)

    def residuals(self, token_ids: Sequence[int]) -> np.ndarray:
        """The residual stream of a fresh sequence, shape (2 * depth + 1, len, dim): executed block s's input at
        2s, its residual after attention at 2s + 1, the final residual (before the output norm) last."""
        return self._fresh(token_ids, self._core.trace)

    def _fresh(self, token_ids: Sequence[int], run: Callable[[array], np.ndarray]) -> np.ndarray:
        """`run` on the ids in an empty context; afterwards the cache holds them (a later prompt may reuse it)."""
        ids = self._check_ids(token_ids)
        self._core.truncate(0)
        self._cached = []
        out = run(ids)
        self._cached = ids.tolist()
        return out

    def _check_ids(self, token_ids: Sequence[int]) -> array:
        """The ids as the core takes them (array('i')): a non-empty sequence of integers (numpy's too) that fits
        the context, each an id of the vocabulary."""
        try:
            ids = [operator.index(i) for i in token_ids]
        except TypeError:  # not iterable, or an element that is not an integer (a float, a nested sequence)
            raise FrankenError("need a non-empty sequence of token ids") from None
        if not ids:
            raise FrankenError("need a non-empty sequence of token ids")
        if len(ids) > self.n_ctx:
            raise FrankenError(f"{len(ids)} tokens do not fit the context of {self.n_ctx}")
        if min(ids) < 0 or max(ids) >= self.config.vocab_size:
            raise FrankenError("token id out of range of the vocabulary")
        return array("i", ids)

    def _feed(self, ids: list[int]) -> array:
        """Make the cache hold exactly `ids`, reusing the longest cached prefix; return tokens still to run."""
        keep = reusable_prefix(self._cached, ids)
        self._core.truncate(keep)
        self._cached = ids[:keep]
        return array("i", ids[keep:])

    def generate(self, prompt: str | Sequence[int], stop: Sequence[str] = (), **sampling: Any) -> Iterator[str]:
        """Stream the continuation of `prompt` (text, or token ids), one text piece per generated token.

        `sampling`: the keyword arguments of generate_tokens (max_tokens, temperature, top_k, top_p, min_p,
        repetition_penalty, repeat_last_n, seed, ignore_eos). Stops at an end-of-sequence token, at any of the
        `stop` strings (not included), after `max_tokens`, or when the context is full. `self.last_stats` holds
        counts and timings afterwards.
        """
        return self._text(self.generate_tokens(prompt, **sampling), list(stop))

    def generate_tokens(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        repeat_last_n: int | None = None,
        seed: int | None = None,
        ignore_eos: bool = False,
        draft: str | None = None,
        draft_max: int = 8,
        draft_plan: Sequence[int] | None = None,
    ) -> Iterator[int]:
        """Like generate(), but yields token ids. Arguments are checked before anything runs. A sampling setting
        left as None takes the model file's recommendation (`recommended_sampling`), else SamplingParams' default.

        `draft`: speculative decoding (franken_rt.speculative), which changes the speed, never the output's
        distribution (greedy output is identical): "lookup" (tokens that followed the text's last tokens earlier
        in it), "self" (this model with the shallower `draft_plan` of stored blocks, else the file's
        `franken.draft_plan`, else `measured_draft_plan()`; needs a Model built with sequences=2), or the path of a
        smaller model file with the
        same vocabulary. At most `draft_max` tokens are drafted per step; `last_stats` counts drafted and accepted
        tokens."""
        given = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p,
                 "repetition_penalty": repetition_penalty, "repeat_last_n": repeat_last_n}
        params = SamplingParams(**{  # type: ignore[arg-type]
            **self.recommended_sampling, **{k: v for k, v in given.items() if v is not None},
            "seed": seed if seed is not None else int.from_bytes(os.urandom(8), "little"),
        })
        if max_tokens < 0:
            raise FrankenError(f"max_tokens must be >= 0, got {max_tokens}")
        ids = self.prompt_tokens(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids or (isinstance(prompt, str) and not prompt):  # "" too, though the tokenizer may add a BOS
            raise FrankenError("the prompt is empty")
        if len(ids) >= self.n_ctx:
            raise FrankenError(f"the prompt has {len(ids)} tokens; the context holds {self.n_ctx}")
        ids = self._check_ids(ids).tolist()  # plain ints, whatever the caller's sequence held
        drafter = self.drafter(draft, draft_plan) if draft is not None else None
        length = DraftLength(draft_max, drafter.cost, agreement=drafter.agreement) if drafter else None
        return self._tokens(ids, params, max_tokens, set() if ignore_eos else set(self.tokenizer.eos_ids),
                            drafter, length)

    def drafter(self, draft: str, plan: Sequence[int] | None = None) -> Drafter:
        """The drafter `draft` names (see generate_tokens), made once per Model and kept. A model drafter (self, a
        file) is measured first: how often its likeliest token is this model's (`agreement`, on sample_text())."""
        key = (draft, tuple(plan) if plan is not None else None)
        if key in self._drafters:
            return self._drafters[key]
        if draft == "lookup":
            made: Drafter = LookupDrafter()
        elif draft == "self":
            plan = check_plan(list(plan), self.config.n_layers, "draft plan") if plan is not None else \
                draft_plan(self.checkpoint)
            if plan is None:
                plan = self.measured_draft_plan()
            made = self._measured(self_drafter(self._core, plan, len(self.layer_plan)))
        else:
            other = read_checkpoint(draft)
            if other.config.vocab_size != self.config.vocab_size or \
                    set(other.tokenizer.eos_ids) != set(self.tokenizer.eos_ids):
                raise FrankenError(f"{draft}: the draft model's vocabulary differs from this model's")
            small = Model(other, threads=self.threads, n_ctx=self.n_ctx, kernels=self.kernels, cpus=self.cpus or None,
                          kv_cache=self.kv_cache)
            made = self._measured(model_drafter(small._core, _weight_bytes(other) / _weight_bytes(self.checkpoint),
                                                small))
        self._drafters[key] = made
        return made

    def _measured(self, drafter: ModelDrafter) -> ModelDrafter:
        """The drafter with its agreement: the share of sample_text()'s positions where its likeliest next token is
        this model's (what greedy drafting would keep). Two batch passes over 64 tokens, after sampling them if no
        plan was measured on them before. A context too short for a sample worth trusting leaves it unmeasured
        (agreement None: DraftLength then probes)."""
        if self.n_ctx < MIN_SAMPLE + len(self.prompt_tokens("The")):
            return drafter
        text = self.sample_text()
        want = self._fresh(text, lambda ids: self._core.greedy_tokens(ids, 0))
        got = drafter.greedy(text)
        drafter.agreement = sum(a == b for a, b in zip(want, got)) / len(text)
        return drafter

    def sample_text(self, n_tokens: int = 64, seed: int = 0) -> list[int]:
        """Text the model samples itself from "The" (temperature 0.8, top-p 0.95, `seed` fixed: the same every
        time), n_tokens ids long (at most 256, the most the core's measurements take at once, and less where the
        context is shorter); made once per Model. What the self-draft plan and the drafters' agreement are measured
        on."""
        key = (n_tokens, seed)
        if key not in self._samples:
            start = self.prompt_tokens("The")
            n = max(len(start) + 1, min(n_tokens, self.n_ctx - 1, 256))
            self._samples[key] = start + list(self.generate_tokens(
                start, max_tokens=n - len(start), temperature=0.8, top_p=0.95, seed=seed, ignore_eos=True))
        return list(self._samples[key])

    def measured_draft_plan(self, n_tokens: int = 64, seed: int = 0) -> list[int]:
        """A self-draft plan when neither the caller nor the file gives one: the executed blocks less the run of a
        quarter of them whose output turns least from its input (the mean angle between the residual stream before
        and after the run, on sample_text(n_tokens, seed): the same plan every time). Costs one short generation
        and one traced pass; the drafter that uses it turns itself off where its drafts are rarely accepted
        (franken_rt.speculative.DraftLength)."""
        depth = len(self.layer_plan)
        if depth < 2:
            raise FrankenError("self drafts need a model of at least 2 blocks")
        skip = max(1, depth // 4)
        dist = self._fresh(self.sample_text(n_tokens, seed), lambda ids: self._core.block_distances(ids, skip))
        first = min(range(len(dist)), key=dist.__getitem__)
        return [b for i, b in enumerate(self.layer_plan) if not first <= i < first + skip]

    def _tokens(self, ids: list[int], params: SamplingParams, max_tokens: int, eos: set[int],
                drafter: Drafter | None = None, length: DraftLength | None = None) -> Iterator[int]:
        sp = _core.SamplerParams()
        for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "repeat_last_n", "seed"):
            setattr(sp, name, getattr(params, name))
        sampler = _core.Sampler(sp)
        stats = self.last_stats = GenerationStats()
        if drafter and length:
            stats.draft_agreement, stats.draft_off = drafter.agreement, length.off
        history = array("i", ids)  # the buffer eval_sample reads the repetition penalty's window from
        todo = self._feed(ids)
        stats.prompt_tokens = len(todo)
        stats.finish_reason = "length"
        first = True
        while stats.generated_tokens < max_tokens:
            if len(history) >= self.n_ctx:
                stats.finish_reason = "context"
                return
            t0 = time.perf_counter()
            # Drafts fit the context and what is left of max_tokens (a check emits the accepted drafts + 1).
            k = 0 if first or not length else min(length.next(), self.n_ctx - len(history),
                                                  max_tokens - stats.generated_tokens - 1)
            drafts = drafter.propose(history, k) if k > 0 and drafter else []
            if drafts:
                emitted = self._core.verify(todo + array("i", drafts), len(drafts), sampler, history)
                assert length is not None
                length.update(len(drafts), len(emitted) - 1)
                stats.drafted_tokens += len(drafts)
                stats.accepted_tokens += len(emitted) - 1
            else:
                emitted = [self._core.eval_sample(todo, sampler, history)]
            elapsed = time.perf_counter() - t0
            if first:
                stats.prompt_seconds, first = elapsed, False
            else:
                stats.decode_steps += 1
                stats.decode_tokens += len(emitted)
                stats.decode_seconds += elapsed
            self._cached.extend(todo)
            self._cached.extend(emitted[:-1])  # the accepted drafts ran too
            for token in emitted:
                if token in eos:
                    stats.finish_reason = "eos"
                    return
                stats.generated_tokens += 1
                history.append(token)
                yield token
            todo = array("i", (emitted[-1],))

    def _text(self, tokens: Iterator[int], stops: list[str]) -> Iterator[str]:
        """Token ids to text pieces; text that may be the start of a stop string is held back until it is not."""
        text = StopText(self.tokenizer, stops)
        for token in tokens:
            piece = text.feed(token)
            if piece:
                yield piece
            if text.stopped:
                self.last_stats.finish_reason = "stop"
                tokens.close()  # type: ignore[attr-defined]
                return
        tail = text.flush()
        if tail:
            yield tail


def _weight_bytes(ckpt: Checkpoint) -> int:
    """The bytes of a checkpoint's tensors (what one pass reads, roughly)."""
    return sum(t.nbytes for t in ckpt.tensors.values())
