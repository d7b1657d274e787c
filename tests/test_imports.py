"""The inference path never imports training code, and no module reaches into another's
private helpers.

The modules that use a trained model (the pipeline, galleries and identify, embedding
and evaluation, alignment, the model store, the HTML report) are walked statically:
every ``import`` and ``from ... import`` in them, at module level or inside a
function, followed through the project's own modules. A trainer (``models/*/train.py``)
or the training loop (``models/harness.py``) anywhere in that closure fails the test,
naming the chain of imports that reached it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("catalog", "models", "sql")

#: What uses a trained model without training one.
INFERENCE = (
    "models.store",
    "models.pipeline.faces",
    "models.pipeline.identify",
    "models.pipeline.report",
    "models.recognition.evaluate",
    "models.recognition.recognizer",
    "models.landmarks.predict",
    "models.detection.detectors",
    "models.alignment.snapshot",
)
#: Training code: the loop and every trainer.
TRAINING = (
    "models.harness",
    "models.landmarks.train",
    "models.recognition.train",
    "models.detection.train",
)


def _source_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """The statements that run on import: the module's body, into if/try blocks, not
    into functions or classes (whose imports run only when called)."""
    out, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If | ast.Try):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]
    return out


def _imports(module: str, text: str, lazy: bool = True) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) of every import statement in ``text``
    (``lazy=False``: only those that run when the module is imported)."""
    out: list[tuple[str, list[str]]] = []
    package = module if module.endswith("__init__") else module.rpartition(".")[0]
    tree = ast.parse(text)
    nodes = ast.walk(tree) if lazy else _module_level(tree)
    for node in nodes:
        if isinstance(node, ast.If) and _type_checking(node):
            continue
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [alias.name for alias in node.names]
            out.append((base, names))
            # ``from models import store`` imports the module models.store
            out.extend((f"{base}.{n}", []) for n in names if _source_of(f"{base}.{n}"))
    return out


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES and _source_of(module) is not None


def import_chains(
    start: tuple[str, ...], sources: dict[str, str] | None = None, lazy: bool = True
) -> dict[str, list[str]]:
    """Every project module reachable from ``start``, with the chain that reached it.
    ``sources``: module texts to use instead of the files (a test's own); ``lazy=False``:
    only through imports that run when a module is imported. Third-party modules
    reached are recorded too (their top-level name), not followed."""
    sources = sources or {}
    chains = {m: [m] for m in start}
    todo = list(start)
    while todo:
        module = todo.pop()
        path = _source_of(module)
        text = sources.get(module) or (path.read_text() if path else "")
        for imported, _ in _imports(module, text, lazy):
            top = imported.split(".")[0]
            if top not in PACKAGES and top not in chains:
                chains[top] = [*chains[module], top]
            # a module's packages run first: models.landmarks.train imports models.landmarks
            parts = imported.split(".")
            for k in range(1, len(parts) + 1):
                name = ".".join(parts[:k])
                if _ours(name) and name not in chains:
                    chains[name] = [*chains[module], name]
                    todo.append(name)
    return chains


def private_imports(modules: list[str], sources: dict[str, str] | None = None) -> list[str]:
    """``module: from other import _name`` for each private name one module takes from a
    module of another package (the modules of one package, such as catalog/cache/, may
    share their private helpers)."""
    sources, found = sources or {}, []
    for module in modules:
        path = _source_of(module)
        text = sources.get(module) or (path.read_text() if path else "")
        for imported, names in _imports(module, text):
            if _ours(imported) and imported.rpartition(".")[0] != module.rpartition(".")[0]:
                found += [f"{module}: from {imported} import {n}" for n in names if n[0] == "_"]
    return found


def test_inference_imports_no_training_code() -> None:
    chains = import_chains(INFERENCE)
    reached = {m: " -> ".join(chains[m]) for m in TRAINING if m in chains}
    assert not reached, f"inference reaches training code: {reached}"
    # the walk does follow the path: the store reaches every task's inference module
    assert {"models.landmarks.predict", "models.recognition.recognizer"} <= set(chains)


def test_inference_takes_no_private_helper_of_another_module() -> None:
    assert private_imports(sorted(import_chains(INFERENCE))) == []


@pytest.mark.parametrize(
    "line",
    [
        "from models.recognition.train import RECOGNITION_AUGMENT",
        "    from models.landmarks import train as tl",  # inside a function
        "import models.harness",
        "from models.detection.train import evaluate_detector",
    ],
)
def test_a_trainer_import_added_to_the_pipeline_is_caught(line: str) -> None:
    faces = (ROOT / "models" / "pipeline" / "faces.py").read_text()
    body = f"def _f():\n{line}\n" if line.startswith(" ") else f"{line}\n"
    chains = import_chains(INFERENCE, {"models.pipeline.faces": faces + "\n" + body})
    reached = [m for m in TRAINING if m in chains]
    assert reached and all(chains[m][0] == "models.pipeline.faces" for m in reached)


def test_a_private_helper_taken_across_modules_is_caught() -> None:
    faces = (ROOT / "models" / "pipeline" / "faces.py").read_text()
    text = faces + "\nfrom models.alignment.snapshot import _snapshot_images\n"
    assert private_imports(["models.pipeline.faces"], {"models.pipeline.faces": text}) == [
        "models.pipeline.faces: from models.alignment.snapshot import _snapshot_images"
    ]


#: What must load without torch: the data layer (but its two torch Datasets), the CLI
#: (``celebcat --help`` and the commands that need no model), ``demo --no-train``, and
#: the numpy-only model helpers.
TORCH_FREE = (
    "cli",
    "catalog.ingest",
    "catalog.snapshots",
    "catalog.cache",
    "catalog.export",
    "catalog.stats",
    "catalog.reports",
    "catalog.html_report",
    "catalog.gallery",
    "catalog.synth",
    "models.pipeline.demo",
    "models.alignment.similarity",
    "models.detection.detectors",
    "models.detection.boxes",
    "models.recognition.metrics",
)


def test_what_needs_no_torch_imports_none_on_import() -> None:
    chains = import_chains(TORCH_FREE, lazy=False)
    assert "torch" not in chains, " -> ".join(chains.get("torch", []))
    # the walk does see torch where it is imported at module level
    assert "torch" in import_chains(("models.store",), lazy=False)
