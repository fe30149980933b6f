"""Text that every machine has: the standard library's pydoc topics (English prose about Python)."""

from __future__ import annotations


def pydoc_text() -> str:
    """All pydoc topics, in sorted order, separated by blank lines (~1.4 MB of English)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))
