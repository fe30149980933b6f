"""Peak memory of this process."""

from __future__ import annotations

import resource


def status_bytes(field: str, pid: int | str = "self") -> int:
    """A memory field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes; OSError where there is none."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/{pid}/status")


def peak_rss_mib() -> float:
    """Peak resident memory in MiB. VmHWM, unlike ru_maxrss, is not inherited across exec (a process started by
    a large one would otherwise report its parent's peak)."""
    try:
        return status_bytes("VmHWM") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
