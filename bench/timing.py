"""What the benches share for timing (imported as ``bench.timing`` with the repository
root on ``sys.path``, as each bench puts it)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """The shortest wall time in seconds of ``repeat`` calls of ``fn``: on the shared
    machine the fastest run is the one least held up by other processes."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
