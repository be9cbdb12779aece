"""The layout rules, read from the source (AST, nothing imported): imports follow the data flow, no import cycles,
the serving path and the client never import torch, and no non-test module is over 600 lines.

Stages, in data-flow order; a runtime module may import its own stage and earlier ones only:

    drape_core (core/: what every stage shares)  <  drape_train (training/)  <  drape_export (export/)
      <  drape_runtime (model_repository/: what the python models import in Triton)
      <  drape_serving (model_repository/: the tools beside Triton: launcher, gateway, health, plan check)
      <  drape_client (client/)  <  drape_monitoring (monitoring/)

Benchmarks (benchmarks/) and tests may import anything. ``KNOWN`` lists the imports against the flow that stay, each
with its reason; a listed import that is gone fails too, so the list only shrinks.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600
STAGES = ["drape_core", "drape_train", "drape_export", "drape_runtime", "drape_serving", "drape_client",
          "drape_monitoring"]
# Packages and scripts by folder; a script belongs to the stage of the folder it ships in.
SOURCES = {
    "drape_core": ["core/drape_core"],
    "drape_train": ["training/drape_train", "training/train_*.py"],
    "drape_export": ["export/drape_export"],
    "drape_runtime": ["model_repository/drape_runtime", "model_repository/python_models"],
    "drape_serving": ["model_repository/drape_serving"],
    "drape_client": ["client/drape_client", "client/locustfile.py"],
    "drape_monitoring": ["monitoring/drape_monitoring"],
}
TORCH_FREE = {"drape_core", "drape_runtime", "drape_serving", "drape_client", "drape_monitoring"}
KNOWN = {
    # `evaluate --served-by URL` scores the served ensembles with the client, lazily, only with that flag: it is an
    # app of the served stack. Moving it out of drape_train would change the documented command.
    ("training/drape_train/evaluate.py", "drape_client"),
}


def _files(stage: str) -> list[Path]:
    out = []
    for pattern in SOURCES[stage]:
        path = ROOT / pattern
        if path.is_dir():
            out += sorted(path.rglob("*.py"))
        else:
            out += sorted(ROOT.glob(pattern))
    return out


def _module_name(path: Path) -> str | None:
    """Dotted name of a package module (None for a script)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    for k, part in enumerate(parts):
        if part in STAGES:
            names = list(parts[k:])
            if names[-1] == "__init__":
                names.pop()
            return ".".join(names)
    return None


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports count), relative ones resolved."""
    return _imports_of(path.read_text(), _module_name(path), path.name == "__init__.py", str(path))


def _imports_of(source: str, module: str | None, is_package: bool, where: str = "<source>") -> list[str]:
    package = (module if is_package else module.rpartition(".")[0]) if module else ""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module
            found.append(origin)
            found += [f"{origin}.{a.name}" for a in node.names]
    return found


ALL = [(stage, path) for stage in STAGES for path in _files(stage)]


def test_every_stage_has_sources():
    for stage in STAGES:
        assert _files(stage), f"{stage}: no sources found under {SOURCES[stage]}"


def test_imports_follow_the_data_flow():
    against, used_known = [], set()
    for stage, path in ALL:
        rel = str(path.relative_to(ROOT))
        for name in _imports(path):
            top = name.split(".")[0]
            if top in STAGES and STAGES.index(top) > STAGES.index(stage):
                if (rel, top) in KNOWN:
                    used_known.add((rel, top))
                else:
                    against.append(f"{rel} imports {name} ({top} comes after {stage})")
    assert not against, "imports against the data flow:\n" + "\n".join(sorted(set(against)))
    assert used_known == KNOWN, f"KNOWN lists imports that are gone: {sorted(KNOWN - used_known)}"


@pytest.mark.parametrize("stage", sorted(TORCH_FREE))
def test_serving_client_and_core_never_import_torch(stage):
    heavy = [f"{p.relative_to(ROOT)} imports {n}" for p in _files(stage) for n in _imports(p)
             if n.split(".")[0] in ("torch", "deepspeed", "drape_train")]
    assert not heavy, "\n".join(heavy)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    modules = {}
    for _, path in ALL:
        if (name := _module_name(path)) is not None:
            modules[name] = path
    for name, path in modules.items():
        for imported in _imports(path):
            # `from pkg import mod` names a module; `from pkg.mod import f` names its module
            target = imported if imported in modules else imported.rpartition(".")[0]
            if target in modules and target != name and not name.startswith(target + ".") and target != "":
                if modules[target].name == "__init__.py":
                    continue   # a package's __init__ re-exports its modules: not a dependency on a sibling
                graph[name].add(target)
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(modules):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_over_600_lines():
    roots = ["core", "training", "export", "model_repository", "client", "monitoring", "benchmarks"]
    long = []
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            if "tests" in path.parts:
                continue
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not long, f"modules over {MAX_LINES} lines (split them by topic):\n" + "\n".join(long)


def test_the_import_reader_sees_relative_lazy_and_from_imports():
    source = "def f():\n    from drape_train.models import build\n    from .card import read_card\n    from . import x\n"
    names = _imports_of(source, "drape_core.colour", False)
    assert {"drape_train.models", "drape_train.models.build", "drape_core.card", "drape_core.card.read_card",
            "drape_core.x"} <= set(names)
    assert "drape_core.sub.y" in _imports_of("from .sub import y\n", "drape_core", True)


GENERIC = ["training/drape_train/objectives.py", "training/drape_train/datasets.py", "training/drape_train/train.py",
           "training/drape_train/outputs.py", "training/drape_train/evaluate.py", "training/drape_train/models/__init__.py",
           "export/drape_export/onnx_export.py"]
NETWORK_NAMES = {"garment_seg", "human_parsing", "gmm", "tom", "recolor", "onmodel_seg"}


def _name_tests(source: str) -> list[str]:
    """Comparisons against a network name (``x == "tom"``, ``x in ("tom", "recolor")``) in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for op in node.comparators:
                values = op.elts if isinstance(op, (ast.Tuple, ast.List, ast.Set)) else [op]
                if any(isinstance(v, ast.Constant) and v.value in NETWORK_NAMES for v in values):
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_generic_training_code_asks_the_family_never_the_name():
    """Per-network behaviour lives in drape_train/families/; the generic code has no `if name == ...` branch."""
    found = [f"{rel} {hit}" for rel in GENERIC for hit in _name_tests((ROOT / rel).read_text())]
    assert not found, "name tests outside the families:\n" + "\n".join(found)
    assert _name_tests('if cfg.network == "tom":\n    pass\nok = name in ("gmm", "x")\n') == [
        "line 1: cfg.network == 'tom'", "line 3: name in ('gmm', 'x')"]


def test_only_the_card_module_parses_card_json():
    """Model cards are read through drape_core.card (typed, validated): no other module json-loads a card."""
    found = []
    for root in ("core", "training", "export", "model_repository", "client", "monitoring", "benchmarks"):
        for path in sorted((ROOT / root).rglob("*.py")):
            if path == ROOT / "core/drape_core/card.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("load", "loads") and ast.unparse(node.func.value) == "json"
                        and "card" in ast.unparse(node).lower()):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "card JSON parsed outside drape_core.card (use read_card):\n" + "\n".join(found)
