"""A recognizer's failures from its stored embeddings, against a brute-force count."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import query, snapshot_catalog

from catalog import failures, results
from catalog.failures import recognition_failures


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    db = snapshot_catalog(tmp_path_factory.mktemp("failures"), ids=6, seed=4)
    run_id = results.start_run(db, "recognition", {"x": 1}, "s")
    ids = [r[0] for r in query(db, "SELECT image_id FROM images ORDER BY 1")]
    vectors = np.random.default_rng(1).normal(size=(len(ids), 6))
    results.write_embeddings(db, run_id, ids, vectors, "bbox")
    return db, run_id


def brute(db: Path, run_id: str, split: str) -> tuple[list, list, dict]:
    rows = query(
        db,
        "SELECT e.image_id, s.identity, e.embedding FROM embeddings e JOIN snapshot_images s "
        "USING (image_id) WHERE s.snapshot = 's' AND s.split = ? AND e.run_id = ? "
        "ORDER BY 1",
        [split, run_id],
    )
    pairs = []
    for (a, ia, ea), (b, ib, eb) in itertools.combinations(rows, 2):
        pairs.append((float(np.dot(ea, eb)), a, b, ia == ib))
    same = sorted(p for p in pairs if p[3])
    diff = sorted((p for p in pairs if not p[3]), reverse=True)
    return same, diff, {r[0]: r[1] for r in rows}


def test_worst_pairs_and_confused_people_match_brute_force(
    run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, run_id = run
    monkeypatch.setattr(failures, "BLOCK", 7)  # several blocks, rows split unevenly
    got = recognition_failures(db, run_id, split="train", top=5, threshold=0.5)
    same, diff, identity = brute(db, run_id, "train")
    assert got.images == len(identity) and got.identities == len(set(identity.values()))
    assert [p.cosine for p in got.false_non_matches] == pytest.approx([p[0] for p in same[:5]])
    assert [p.cosine for p in got.false_matches] == pytest.approx([p[0] for p in diff[:5]])
    for p in got.false_non_matches:
        assert p.identity_a == p.identity_b == identity[p.image_a] == identity[p.image_b]
    for p in got.false_matches:
        assert p.identity_a != p.identity_b
    # confused people: closest centres first; counts of their pairs above 0.5
    first = got.confused[0]
    assert [c.centre_cosine for c in got.confused] == sorted(
        [c.centre_cosine for c in got.confused], reverse=True
    )
    between = [
        p for p in diff if {identity[p[1]], identity[p[2]]} == {first.identity_a, first.identity_b}
    ]
    assert first.pairs == len(between)
    assert first.above_threshold == sum(p[0] > 0.5 for p in between)
    assert first.closest.cosine == pytest.approx(max(p[0] for p in between))
    assert got.threshold == 0.5 and got.threshold_source == "given"


def test_the_stored_threshold_is_used(run: tuple[Path, str]) -> None:
    db, run_id = run
    none = recognition_failures(db, run_id, split="val", top=3)
    assert none.threshold is None and none.threshold_source == "none"
    results.log_metrics(db, run_id, 0, "open_set", {"threshold@fpr=0.01": 0.25})
    stored = recognition_failures(db, run_id, split="val", top=3)
    assert stored.threshold == 0.25 and stored.threshold_source.startswith("stored")
