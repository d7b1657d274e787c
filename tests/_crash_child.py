"""Run one catalog operation and SIGKILL this process at a chosen point (no cleanup runs).

Used by ``tests/test_crash_safety.py``:

    python tests/_crash_child.py OPERATION POINT JSON_ARGS

The kill points are set from outside, by wrapping library functions in this process
only (nothing in the library knows about them):

* ``commit-before`` / ``commit-after``: at the catalog connection's COMMIT, just before it
  runs or just after it returned (before the connection closes and checkpoints, so the
  next open replays the WAL);
* ``load``: when the first annotation file has loaded (ingest, files load in threads);
* ``fill:N``: when the N-th crop is written (cache build, align);
* ``record``: when the cache file is complete and renamed into place, before its index
  is written;
* ``batch:E:B``: after batch B of epoch E (1 the first; training), ``save:E``: half-way through
  writing epoch E's last.pt (training).

A point that is never reached lets the operation finish: exit status 0, and the test
sees that it was not killed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


class _Connection:
    """A DuckDB connection that dies at its COMMIT (before or after it runs)."""

    def __init__(self, con, when: str) -> None:
        self._con, self._when = con, when

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    def execute(self, sql: str, *args):
        if sql.strip().upper() == "COMMIT" and self._when == "before":
            die()
        result = self._con.execute(sql, *args)
        if sql.strip().upper() == "COMMIT" and self._when == "after":
            die()
        return result


def at_commit(module, point: str) -> None:
    real = module.connect
    when = point.split("-", 1)[1]
    module.connect = lambda *a, **k: _Connection(real(*a, **k), when)


#: A landmark model small enough that a crash test trains it in seconds on a loaded CPU.
TINY_MODEL = "hourglass_tiny"


def register_tiny_model(setitem=None) -> None:
    """Add :data:`TINY_MODEL` (1 stack, depth 2, 16 channels, 64 px) to the registry;
    ``setitem``: pytest's ``monkeypatch.setitem``, so that the test undoes it."""
    from functools import partial

    from models import registry
    from models.landmarks import hourglass

    setitem = setitem or (lambda d, k, v: d.__setitem__(k, v))
    tiny = partial(hourglass.hourglass_small, stacks=1, depth=2, channels=16, input_size=64)
    setitem(registry._MODELS[registry.LANDMARKS], TINY_MODEL, tiny)
    setitem(registry._TASK_OF, TINY_MODEL, registry.LANDMARKS)


def main() -> None:
    op, point, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if op == "ingest":
        import catalog.ingest as m

        if point == "load":
            real = m.load_annotation

            def load(*a, **k):
                rows = real(*a, **k)
                die()
                return rows

            m.load_annotation = load
        elif point.startswith("commit-"):
            at_commit(m, point)
        m.ingest(args["data"], args["db"], images=args["images"], workers=1)
    elif op == "snapshot":
        import catalog.snapshots as m

        at_commit(m, point)
        m.create(args["name"], args["db"])
    elif op in ("cache", "align"):
        import catalog.cache.build as b
        import catalog.cache.index as ix

        n = int(point.split(":")[1]) if point.startswith("fill:") else None
        if point == "record":

            def record(*a, **k):
                die()

            b._record = record
        elif point.startswith("commit-"):
            at_commit(ix, point)
        if op == "cache":
            b.build_cache(
                args["snapshot"],
                args["db"],
                size=args["size"],
                workers=1,
                progress=lambda done, total: done == n and die(),
            )
        else:
            from models.alignment.snapshot import align_snapshot

            align_snapshot(
                None,
                args["snapshot"],
                args["db"],
                size=args["size"],
                source="truth",
                workers=1,
                progress=lambda stage, done, total: done == n and die(),
            )
    elif op == "train":
        import models.checkpoints as ck
        from models.landmarks import train as tl

        register_tiny_model()

        on_batch = None
        if point.startswith("batch:"):
            e, k = (int(v) for v in point.split(":")[1:])
            on_batch = lambda epoch, done, total, loss: (epoch, done) == (e, k) and die()  # noqa: E731
        elif point.startswith("save:"):
            epoch = int(point.split(":")[1])
            real = ck.torch.save

            def save(obj, f, *a, **k):
                real(obj, f, *a, **k)
                if obj.get("epoch") == epoch + 1 and Path(f).name.startswith("last.pt"):
                    size = Path(f).stat().st_size
                    os.truncate(f, size // 2)  # the write got half-way
                    die()

            ck.torch.save = save
        config = tl.LandmarkTrainConfig(**args["config"])
        tl.train_landmarks(config, args["db"], on_batch=on_batch)
    else:
        raise SystemExit(f"unknown operation {op!r}")


if __name__ == "__main__":
    main()
