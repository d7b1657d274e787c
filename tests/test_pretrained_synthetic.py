"""The recognizer and the detector celebcat ships (models/pretrained/synthetic.py):
imported as runs, checked against their pinned hashes; the recognizer tells apart
synthetic people it never saw (a population of another seed than the one it trained
on) and the detector finds their faces in group photos, both far better than the same
network with its weights scrambled."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from catalog import results  # noqa: E402
from models import pretrained, store  # noqa: E402
from models.pretrained import synthetic  # noqa: E402
from tests.conftest import celebcat, one_torch_thread, query, snapshot_catalog  # noqa: E402


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 people of the demo's style, drawn with a seed the shipped model never saw."""
    return snapshot_catalog(tmp_path_factory.mktemp("shipped"), ids=12, seed=7, style="easy")


def test_import_records_the_run_with_its_provenance(db: Path) -> None:
    code, out = celebcat("runs", "import", "synthetic", "--db", str(db))
    assert code == 0, out
    run = results.get_run(db, synthetic.RECOGNIZER_RUN)
    info = run.config["pretrained"]
    assert run.kind == "recognition" and info["source"] == "synthetic"
    assert info["sha256"] == synthetic.SHA256 == pretrained.sha256(info["file"])
    assert info["package"].startswith("celeba-catalog ")
    assert run.config["source"] == "aligned/arcface/truth" and run.config["size"] == 64
    detector = results.get_run(db, synthetic.DETECTOR_RUN)
    assert detector.kind == "detector"
    assert detector.config["pretrained"]["sha256"] == synthetic.DETECTOR_SHA256
    code, out = celebcat("runs", "--db", str(db))
    assert synthetic.RECOGNIZER_RUN in out and synthetic.DETECTOR_RUN in out


@pytest.mark.parametrize("model", synthetic.MODELS, ids=lambda m: m.kind)
def test_an_altered_file_is_refused_naming_it(
    tmp_path: Path, model: pretrained.PretrainedModel
) -> None:
    assert model.file is not None
    copy = tmp_path / model.file
    shutil.copy(pretrained.model_file(model), copy)
    with copy.open("r+b") as f:  # one byte of the weights changed
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(pretrained.PretrainedError, match=rf"{model.name}.*SHA-256"):
        pretrained.model_file(dataclasses.replace(model, file=str(copy)))


def _verification_tpr(db: Path, recognizer: object) -> float:
    """The share of same-person pairs above the cosine that 1 % of different-person
    pairs exceed, over every pair of the snapshot's truth-aligned 64 px crops."""
    from sklearn.metrics import roc_curve

    from catalog.datasets import FaceDataset
    from models.alignment.snapshot import align_snapshot

    align_snapshot(None, "s", db, size=64, template="arcface", source="truth", workers=1)
    ds = FaceDataset(db, "s", "all", "aligned/arcface/truth", 64, image_dtype="uint8")
    crops = np.stack([ds[i]["image"].numpy().transpose(1, 2, 0) for i in range(len(ds))])
    emb = recognizer.embed(crops)  # type: ignore[attr-defined]
    same = ds.identities[:, None] == ds.identities[None, :]
    upper = np.triu_indices(len(ds), 1)
    fpr, tpr, _ = roc_curve(same[upper], (emb @ emb.T)[upper])
    return float(np.interp(0.01, fpr, tpr))


def test_it_tells_apart_synthetic_people_it_never_saw(db: Path) -> None:
    import torch

    pretrained.import_source(db, "synthetic")
    with one_torch_thread():
        shipped = store.load_recognizer(synthetic.RECOGNIZER_RUN, db)
        shipped_tpr = _verification_tpr(db, shipped)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():  # the same network, its weights shuffled within each tensor
            for p in shipped.net.parameters():
                flat = p.view(-1)
                flat.copy_(flat[torch.randperm(flat.numel(), generator=generator)])
        scrambled = _verification_tpr(db, shipped)
    print(f"verification TPR at FPR 0.01: shipped {shipped_tpr:.3f}, scrambled {scrambled:.3f}")
    # measured: 0.94 shipped, 0.12 scrambled (a random network still sees hair and skin)
    assert shipped_tpr > 0.6 and scrambled < 0.3, (shipped_tpr, scrambled)


def _faces_found(db: Path, detector: object) -> int:
    """Faces found (IoU >= 0.5) in two group photos of six of the snapshot's people
    each, laid out as the demo's."""
    from catalog.synth.group import group_photo
    from models.detection.boxes import match
    from models.pipeline.demo import photo_layout

    people = [r[0] for r in query(db, "SELECT DISTINCT identity FROM snapshot_images ORDER BY 1")]
    found = 0
    for k, six in enumerate((people[:6], people[-6:])):
        photo = group_photo(db, six, seed=k, **photo_layout(6))
        boxes = detector.detect([np.asarray(photo.image)])[0]  # type: ignore[attr-defined]
        found += len(match(np.array([f.box for f in photo.faces]), boxes))
    return found


def test_the_detector_finds_faces_of_people_it_never_saw(template: Path) -> None:
    import torch

    pretrained.import_source(template, "synthetic")
    with one_torch_thread():
        shipped = store.load_detector(f"run:{synthetic.DETECTOR_RUN}", template)
        found = _faces_found(template, shipped)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():  # the same network, its weights shuffled within each tensor
            for p in shipped.loaded.model.parameters():  # type: ignore[attr-defined]
                flat = p.view(-1)
                flat.copy_(flat[torch.randperm(flat.numel(), generator=generator)])
        scrambled = _faces_found(template, shipped)
    print(f"group-photo faces found of 12: shipped {found}, scrambled {scrambled}")
    assert found >= 10 and scrambled <= 3, (found, scrambled)
