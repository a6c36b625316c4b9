"""Peak resident memory of a process, as Linux reports it (for the benches' growth figures)."""

from pathlib import Path


def peak_rss_mb(pid: int | str = "self") -> float:
    """``VmHWM`` of process ``pid`` in MiB; NaN where /proc does not say (not Linux, or gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
