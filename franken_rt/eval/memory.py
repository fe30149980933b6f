"""Peak memory of this process."""

from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """Peak resident memory in MiB. VmHWM, unlike ru_maxrss, is not inherited across exec (a process started by
    a large one would otherwise report its parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
