"""Text that every machine has: the standard library's pydoc topics (English prose about Python)."""

from __future__ import annotations

from pathlib import Path
from pydoc_data.topics import topics

from franken_rt.errors import FrankenError


def read_text(path: str | Path) -> str:
    """A user's UTF-8 text file; a missing, unreadable or non-UTF-8 file is one clear error."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FrankenError(f"no such file: {path}") from None
    except UnicodeDecodeError:
        raise FrankenError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise FrankenError(f"cannot read {path}: {e.strerror or e}") from None


def pydoc_text() -> str:
    """All pydoc topics, in sorted order, separated by blank lines (~1.4 MB of English)."""
    return "\n\n".join(topics[k] for k in sorted(topics))
