"""Generated token ids to text pieces, cut at stop strings: shared by the generation API and the server."""

from __future__ import annotations

from collections.abc import Sequence

from franken_rt.tokenizer import Tokenizer


class StopText:
    """Feeds token ids, gives back the text ready to show. Text that may be the start of a stop string is held back
    until it is not; a complete stop string ends the text before it (the stop string itself is not shown)."""

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str] = ()) -> None:
        self._decoder = tokenizer.stream()
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def feed(self, token: int) -> str:
        """The text that `token` makes ready; after a stop string, `stopped` is set and nothing more comes."""
        if self.stopped:
            return ""
        self._pending += self._decoder.feed(token)
        if not self._stops:
            out, self._pending = self._pending, ""
            return out
        hit = min((i for i in (self._pending.find(s) for s in self._stops) if i >= 0), default=-1)
        if hit >= 0:
            self.stopped = True
            out, self._pending = self._pending[:hit], ""
            return out
        hold = max((k for s in self._stops for k in range(1, len(s)) if self._pending.endswith(s[:k])), default=0)
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """What is held back, at the end of the generation (a partial stop string is shown: it did not complete)."""
        if self.stopped:
            return ""
        out = self._pending + self._decoder.flush()
        self._pending = ""
        return out
