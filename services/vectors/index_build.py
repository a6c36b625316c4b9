"""Building a Qdrant Edge shard's vector index in a process of its own.

qdrant-edge-py's ``optimize()`` holds Python's GIL for the whole build (seconds to minutes,
``bench/edge_gil.py``), so the process that serves from a shard cannot build its index on a
thread. ``EdgeProductStore.rebuild_index`` copies the shard and has this module build the
copy's index in a child process, at a lower CPU priority than the serving one, then swaps it in.

    python -m services.vectors.index_build SHARD_DIR [--nice 10]

prints one JSON line, ``{"built": true|false, "seconds": …}``: false when the shard needed
no index work. It imports nothing but qdrant-edge, so it starts in well under a second.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

NICE = 10  # below `serve`'s own requests: on a small machine the build takes the idle cores


class IndexBuildFailed(RuntimeError):
    pass


def build_offline(shard_dir: Path, cancel: threading.Event | None = None, timeout_s: float = 3600.0, nice: int = NICE) -> bool:
    """Build ``shard_dir``'s index in a child process; True when it built something.

    The shard must not be open in this process (one process owns a shard). ``cancel`` stops
    the child (e.g. `serve` is shutting down) and raises :class:`IndexBuildFailed`, as does a
    failed or timed-out build; the shard copy is then the caller's to discard.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "services.vectors.index_build", str(shard_dir), "--nice", str(nice)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = cancel or threading.Event()
    deadline = time.monotonic() + timeout_s
    while child.poll() is None:
        if stop.wait(0.2) or time.monotonic() > deadline:
            child.kill()
            child.wait()
            raise IndexBuildFailed("index build cancelled" if stop.is_set() else f"index build took longer than {timeout_s:.0f} s")
    out, err = child.communicate()
    if child.returncode != 0:
        raise IndexBuildFailed(f"index build exited {child.returncode}: {err.strip()[-300:]}")
    try:
        return bool(json.loads(out.strip().splitlines()[-1])["built"])
    except (ValueError, KeyError, IndexError) as exc:
        raise IndexBuildFailed(f"index build said {out.strip()[-200:]!r}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("shard_dir", type=Path)
    parser.add_argument("--nice", type=int, default=NICE)
    parser.add_argument("--threads", type=int, default=0, help="indexing threads (default: half the cores)")
    args = parser.parse_args(argv)
    if args.nice > 0:
        os.nice(args.nice)
    import qdrant_edge as q

    started = time.perf_counter()
    # Half the cores (Qdrant's own choice is all of them): the serving process keeps the rest.
    # Persisted with the copy, so the next start's build also leaves room; Qdrant's HNSW defaults otherwise.
    stored = json.loads((args.shard_dir / "edge_config.json").read_text())
    hnsw = stored.get("hnsw_config") or {}
    threads = args.threads or max(1, (os.cpu_count() or 2) // 2)
    from services.vectors.edge_config import vector_params

    config = q.EdgeConfig(
        vectors=vector_params(stored["vectors"]),  # quantisation included: a load writes its config over the stored one
        hnsw_config=q.HnswIndexConfig(
            m=hnsw.get("m", 16),
            ef_construct=hnsw.get("ef_construct", 100),
            full_scan_threshold=hnsw.get("full_scan_threshold", 10_000),
            max_indexing_threads=threads,
        ),
    )
    shard = q.EdgeShard.load(str(args.shard_dir), config)
    try:
        built = bool(shard.optimize())
        shard.flush()
    finally:
        shard.close()
    print(json.dumps({"built": built, "seconds": round(time.perf_counter() - started, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
