"""Continuous batching: the server's streams decoded together, one pass over the weights per step.

The model holds one KV cache per slot (`Model(..., sequences=N)`). One engine thread owns the model and loops:
admit waiting jobs into free slots (the slot whose cache shares the longest prefix with the prompt, so a follow-up
turn of a conversation reuses its cache), then run one step — every decoding slot's next token plus, in what is left
of the batch, a chunk of each prefilling slot's prompt — through `step_rows`, and hand each job its new token. A job
joins at the next step and leaves when it is done or cancelled; its slot is free at once.

A row's logits do not depend on the other rows of its batch (the core's kernels are batch-invariant), so a greedy
job gives the same tokens alone or beside others, whatever the chunking of its prompt.
"""

from __future__ import annotations

import collections
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from franken_rt import _core
from franken_rt.errors import FrankenError
from franken_rt.model import Model
from franken_rt.prefix import reusable_prefix
from franken_rt.sampling import SamplingParams
from franken_rt.speculative import DraftLength, LookupDrafter
from franken_rt.text_stream import StopText


class QueueFull(FrankenError):
    """Every slot is busy and the waiting line is full."""


@dataclass
class Job:
    """One request's generation. `emit(text, done)` is called from the engine thread: with each piece of text as
    it is ready, and once with done=True at the end (after which `finish_reason` and the counts are final)."""

    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    emit: Callable[[str, bool], None]
    stops: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    draft_max: int = 0  # speculative decoding by prompt lookup, at most this many drafts a step (0: off)
    # Filled by the engine.
    finish_reason: str = ""  # "stop" (end of sequence or a stop string), "length" (max_tokens or context full),
    #                          "cancelled", or "error"
    error: str = ""
    completion_tokens: int = 0
    drafted_tokens: int = 0   # speculative decoding: drafts checked
    accepted_tokens: int = 0  # ... and kept
    cached_tokens: int = 0  # prompt tokens whose cache was reused from the slot's previous job
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)
    first_token_at: float = 0.0

    def cancel(self) -> None:
        """Stop generating (the client went away): the slot is freed at the engine's next step."""
        self.cancelled.set()


class _Slot:
    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.cached: list[int] = []  # tokens in this slot's KV cache, in order
        self.job: Job | None = None
        self.todo: list[int] = []    # prompt tokens (or the last sampled token) still to run
        self.history = array("i")
        self.sampler: _core.Sampler | None = None
        self.text: StopText | None = None
        self.length: DraftLength | None = None  # the job's draft length, when it drafts
        self.last_used = 0.0


@dataclass
class EngineStats:
    steps: int = 0
    rows: int = 0          # rows run (decode tokens and prompt tokens)
    generated: int = 0     # tokens handed to jobs
    busy_seconds: float = 0.0


class Engine:
    """Runs jobs on `model` (built with `sequences` >= the number of slots) on one background thread."""

    def __init__(self, model: Model, queue_limit: int = 64, batch: int = 64,
                 after_step: Callable[[], None] | None = None) -> None:
        """`after_step`: called on the engine thread after each round of emits (a front end hands the pieces over
        to its event loop once per step, not once per piece)."""
        self.model = model
        self._after_step = after_step or (lambda: None)
        self.slots = [_Slot(s) for s in range(model.sequences)]
        self.queue_limit = queue_limit
        self.batch = max(batch, len(self.slots))
        self.stats = EngineStats()
        self._eos = set(model.tokenizer.eos_ids)
        self._lookup = LookupDrafter()
        self._waiting: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="franken-engine", daemon=True)
        self._thread.start()

    # ---- the front end's side (any thread) ---------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job; QueueFull at once if every slot is busy and `queue_limit` jobs already wait."""
        if len(job.prompt) >= self.model.n_ctx:
            raise FrankenError(f"the prompt has {len(job.prompt)} tokens; the context holds {self.model.n_ctx}")
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            busy = sum(s.job is not None for s in self.slots)
            if busy + len(self._waiting) >= len(self.slots) + self.queue_limit:
                raise QueueFull(f"all {len(self.slots)} slots are busy and {len(self._waiting)} requests wait")
            self._waiting.append(job)
            self._wake.notify()

    def active(self) -> int:
        """Jobs in slots or waiting."""
        with self._wake:
            return sum(s.job is not None for s in self.slots) + len(self._waiting)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything and end the thread."""
        with self._wake:
            self._stopping = True
            for job in self._waiting:
                job.cancel()
            for slot in self.slots:
                if slot.job:
                    slot.job.cancel()
            self._wake.notify()
        self._thread.join(timeout)

    # ---- the engine thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                self._drop_cancelled()
                self._admit()
                idle = not any(s.job for s in self.slots)
            self._after_step()
            if idle:
                with self._wake:
                    if self._stopping:
                        return
                    if not self._waiting:
                        self._wake.wait()
                continue
            try:
                self._step()
            except Exception as exc:  # a core error fails the jobs of this step, never the server
                for slot in self.slots:
                    if slot.job:
                        slot.cached = []  # what the failed pass left in the cache is unknown
                        self.model._core.truncate(0, slot.seq)
                        self._finish(slot, "error", error=str(exc))
            self._after_step()

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._waiting if j.cancelled.is_set()]:
            self._waiting.remove(job)
            job.finish_reason = "cancelled"
            job.emit("", True)
        for slot in self.slots:
            if slot.job and slot.job.cancelled.is_set():
                self._finish(slot, "cancelled")

    def _admit(self) -> None:
        """Waiting jobs into free slots, oldest first; each takes the free slot sharing the longest prefix with its
        prompt (the least recently used one among equals)."""
        while self._waiting:
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            job = self._waiting.popleft()
            ids = job.prompt
            slot = max(free, key=lambda s: (reusable_prefix(s.cached, ids), -s.last_used))
            keep = reusable_prefix(slot.cached, ids)
            self.model._core.truncate(keep, slot.seq)
            slot.cached = ids[:keep]
            slot.todo = ids[keep:]
            slot.job = job
            job.cached_tokens = keep
            sp = _core.SamplerParams()
            for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "repeat_last_n", "seed"):
                setattr(sp, name, getattr(job.params, name))
            slot.sampler = _core.Sampler(sp)
            slot.history = array("i", ids)
            slot.text = StopText(self.model.tokenizer, job.stops)
            slot.length = DraftLength(job.draft_max, cost=0.0) if job.draft_max else None
            if job.max_tokens == 0:
                self._finish(slot, "length")

    def _step(self) -> None:
        """One pass: every decoding slot's token first, then prompt chunks in what is left of the batch."""
        tokens, seqs, want = array("i"), array("i"), array("i")
        wanted: list[_Slot] = []
        decoding = [s for s in self.slots if s.job and len(s.todo) == 1 and s.job.completion_tokens > 0]
        prefilling = sorted((s for s in self.slots if s.job and s not in decoding), key=lambda s: s.job.queued_at)
        drafted: dict[_Slot, int] = {}  # drafted tokens at the end of a decoding slot's todo, this step
        budget = self.batch - len(decoding)  # a decoding slot's drafts come out of what the batch has spare
        for slot in decoding:
            job = slot.job
            if slot.length is None or job is None:
                continue
            k = min(slot.length.next(), budget, self.model.n_ctx - len(slot.history),
                    job.max_tokens - job.completion_tokens - 1)
            drafts = self._lookup.propose(slot.history, k) if k > 0 else []
            slot.todo = slot.todo + drafts
            drafted[slot] = len(drafts)
            budget -= len(drafts)
        budget = self.batch
        sizes: list[int] = []
        for slot in decoding + prefilling:
            take = min(len(slot.todo), budget)
            if take == 0:
                break
            tokens.extend(slot.todo[:take])
            seqs.extend([slot.seq] * take)
            done = take == len(slot.todo)
            n_drafts = drafted.get(slot, 0)
            want.extend([0] * (take - 1 - n_drafts) + [1] * n_drafts + [1 if done else 0])
            if done:
                wanted.append(slot)
                sizes.append(1 + n_drafts)
            slot.cached.extend(slot.todo[:take])
            slot.todo = slot.todo[take:]
            budget -= take
        t0 = time.perf_counter()
        emitted = self.model._core.step_rows(tokens, seqs, want, [s.sampler for s in wanted],
                                             [s.history for s in wanted], sizes)
        now = time.perf_counter()
        self.stats.steps += 1
        self.stats.rows += len(tokens)
        self.stats.busy_seconds += now - t0
        for slot, size, out in zip(wanted, sizes, emitted):
            if size > 1:  # drafts were checked: the cache keeps the accepted ones
                assert slot.length is not None and slot.job is not None
                slot.length.update(size - 1, len(out) - 1)
                slot.job.drafted_tokens += size - 1
                slot.job.accepted_tokens += len(out) - 1
                del slot.cached[len(slot.cached) - (size - len(out)):]
            for token in out:
                self._take(slot, token, now)
                if slot.job is None:  # finished (end of sequence, a stop string, max_tokens)
                    break

    def _take(self, slot: _Slot, token: int, now: float) -> None:
        job = slot.job
        assert job is not None and slot.text is not None
        if not job.first_token_at:
            job.first_token_at = now
        slot.last_used = now
        if token in self._eos and not job.ignore_eos:
            self._finish(slot, "stop")
            return
        job.completion_tokens += 1
        self.stats.generated += 1
        slot.history.append(token)
        piece = slot.text.feed(token)
        if piece:
            job.emit(piece, False)
        if slot.text.stopped:
            self._finish(slot, "stop")
        elif job.completion_tokens >= job.max_tokens or len(slot.history) >= self.model.n_ctx:
            self._finish(slot, "length")
        else:
            slot.todo = [token]

    def _finish(self, slot: _Slot, reason: str, error: str = "") -> None:
        job = slot.job
        assert job is not None
        if reason in ("stop", "length") and slot.text is not None:
            tail = slot.text.flush()
            if tail:
                job.emit(tail, False)
        job.finish_reason, job.error = reason, error
        slot.todo = []  # tokens not run: the cache holds only what ran
        slot.job = None
        slot.sampler = None
        slot.text = None
        job.emit("", True)
