"""Peak resident memory and CPU time of a process, as Linux reports them (for the benches)."""

import os
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


def cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU time process ``pid`` has used, in seconds; NaN where /proc does not say."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")
