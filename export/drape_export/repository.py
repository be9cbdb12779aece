"""Assemble a Triton model repository from exported networks and the serving sources.

Input: ``onnx_dir/<network>/{model.onnx, card.json}`` for every network the
export produced (plus ``model.plan`` for the GPU target). Output: a complete
Triton model repository:

* one model per network, its ``config.pbtxt`` generated from the model card
  (``target="cpu"``: a python-backend model running ONNX Runtime, i.e.
  ``1/model.py`` = ``python_models/onnx_runner.py`` + ``1/model.onnx``;
  ``target="gpu"``: a ``tensorrt_plan`` model expecting ``1/model.plan``);
* the pre/post python models (``python_models/*.py`` as ``<model>/1/model.py``)
  and the ensembles, their configs from ``configs/*.pbtxt`` with ``{height}``
  and ``{width}`` filled from the cards.

The repository is built in a temporary directory next to ``out_dir`` and
renamed into place only when complete, so a server never sees half a
repository and a failed build leaves the previous one untouched.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from drape_serving import contract

__all__ = [
    "AssemblyError",
    "CardTensor",
    "ModelCard",
    "AssemblyReport",
    "assemble",
    "load_cards",
    "network_config",
    "fill_placeholders",
    "serving_sources",
]

TARGETS = ("cpu", "gpu")
PREFERRED_BATCH_SIZES = (4, 8)
MAX_QUEUE_DELAY_US = 2000
DEFAULT_INTRA_OP_THREADS = 2
CARD_FILE = "card.json"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
MANIFEST_FILE = "manifest.json"
_CARD_FORMAT_VERSION = 1
_CARD_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")


class AssemblyError(RuntimeError):
    """The inputs cannot make a consistent repository (bad/missing cards, resolution mismatch...)."""


# ----------------------------------------------------------------------------- cards


@dataclass(frozen=True)
class CardTensor:
    """One tensor of a model card; ``shape`` excludes the batch axis."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def triton_type(self) -> str:
        try:
            return _CARD_DTYPES[self.dtype]
        except KeyError:
            raise AssemblyError(f"tensor {self.name!r}: unsupported dtype {self.dtype!r} (known: {sorted(_CARD_DTYPES)})") from None


@dataclass(frozen=True)
class ModelCard:
    """The parts of a network's ``card.json`` assembly needs (the full JSON is kept in ``raw``)."""

    name: str
    family: str
    height: int
    width: int
    inputs: tuple[CardTensor, ...]
    outputs: tuple[CardTensor, ...]
    max_batch_size: int
    directory: Path
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def resolution(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def model_name(self) -> str:
        """The Triton model name (differs from the card name only to avoid clashing with an ensemble)."""
        spec = contract.NETWORKS.get(self.name)
        return spec.model_name if spec else self.name

    @classmethod
    def from_file(cls, path: Path) -> "ModelCard":
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AssemblyError(f"{path}: cannot read model card: {exc}") from None
        try:
            version = raw.get("format_version")
            if version != _CARD_FORMAT_VERSION:
                raise AssemblyError(f"format_version {version!r} is not {_CARD_FORMAT_VERSION}")
            card = cls(
                name=str(raw["name"]),
                family=str(raw.get("family", raw["name"])),
                height=int(raw["resolution"]["height"]),
                width=int(raw["resolution"]["width"]),
                inputs=tuple(_card_tensor(t) for t in raw["inputs"]),
                outputs=tuple(_card_tensor(t) for t in raw["outputs"]),
                max_batch_size=int(raw["max_batch_size"]),
                directory=path.parent,
                raw=raw,
            )
        except AssemblyError as exc:
            raise AssemblyError(f"{path}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise AssemblyError(f"{path}: malformed model card ({type(exc).__name__}: {exc})") from None
        card.validate()
        return card

    def validate(self) -> None:
        """Check the card against itself and, for known networks, against the serving contract."""
        where = self.directory / CARD_FILE
        problems = []
        if self.directory.name != self.name:
            problems.append(f"card name {self.name!r} differs from its directory name {self.directory.name!r}")
        if self.height < 1 or self.width < 1:
            problems.append(f"resolution {self.height}x{self.width} is not positive")
        if self.max_batch_size < contract.MAX_BATCH_SIZE:
            problems.append(
                f"max_batch_size {self.max_batch_size} is below the ensembles' {contract.MAX_BATCH_SIZE}"
            )
        for tensor in self.inputs + self.outputs:
            tensor.triton_type  # raises on unknown dtypes
            if len(tensor.shape) < 2 or tensor.shape[-2:] != (self.height, self.width):
                problems.append(
                    f"tensor {tensor.name!r} shape {list(tensor.shape)} does not end in the resolution "
                    f"[{self.height}, {self.width}]"
                )
        spec = contract.NETWORKS.get(self.name)
        if spec is not None:
            problems += _contract_mismatch("input", spec.inputs, self.inputs)
            problems += _contract_mismatch("output", spec.outputs, self.outputs)
        if problems:
            raise AssemblyError(f"{where}: " + "; ".join(problems))


def _card_tensor(obj: dict[str, Any]) -> CardTensor:
    return CardTensor(name=str(obj["name"]), dtype=str(obj["dtype"]), shape=tuple(int(d) for d in obj["shape"]))


def _contract_mismatch(kind: str, expected: Iterable[tuple[str, int]], actual: Iterable[CardTensor]) -> list[str]:
    want = {name: channels for name, channels in expected}
    have = {t.name: t for t in actual}
    problems = [f"missing {kind} {name!r}" for name in want if name not in have]
    problems += [f"unexpected {kind} {name!r}" for name in have if name not in want]
    for name, channels in want.items():
        tensor = have.get(name)
        if tensor is None:
            continue
        if tensor.dtype != "float32":
            problems.append(f"{kind} {name!r} dtype {tensor.dtype} is not float32")
        if len(tensor.shape) != 3 or tensor.shape[0] != channels:
            problems.append(f"{kind} {name!r} shape {list(tensor.shape)} is not [{channels}, H, W]")
    return problems


def load_cards(onnx_dir: str | Path) -> list[ModelCard]:
    """Read and validate every ``<onnx_dir>/<name>/card.json`` (sorted by name)."""
    root = Path(onnx_dir)
    if not root.is_dir():
        raise AssemblyError(f"ONNX directory not found: {root}")
    cards = [ModelCard.from_file(p) for p in sorted(root.glob(f"*/{CARD_FILE}"))]
    if not cards:
        raise AssemblyError(f"no networks in {root}: expected <name>/{CARD_FILE} next to <name>/{ONNX_FILE}")
    return cards


def _check_onnx_io(card: ModelCard) -> None:
    """Cheap early check that the graph's I/O names match the card (skipped when onnx is not installed)."""
    try:
        import onnx
    except ImportError:
        return
    path = card.directory / ONNX_FILE
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises many kinds
        raise AssemblyError(f"{path}: cannot load ONNX graph: {exc}") from None
    initializers = {i.name for i in model.graph.initializer}
    graph_in = {i.name for i in model.graph.input if i.name not in initializers}
    graph_out = {o.name for o in model.graph.output}
    card_in = {t.name for t in card.inputs}
    card_out = {t.name for t in card.outputs}
    if graph_in != card_in or not card_out <= graph_out:
        raise AssemblyError(
            f"{path}: graph I/O does not match {CARD_FILE}: graph inputs {sorted(graph_in)} vs card {sorted(card_in)}, "
            f"graph outputs {sorted(graph_out)} vs card {sorted(card_out)}"
        )


# ---------------------------------------------------------------------------- configs


def _dims(shape: Iterable[int]) -> str:
    return ", ".join(str(d) for d in shape)


def _tensor_block(kind: str, tensors: Iterable[CardTensor]) -> str:
    entries = [
        f'  {{\n    name: "{t.name}"\n    data_type: {t.triton_type}\n    dims: [ {_dims(t.shape)} ]\n  }}'
        for t in tensors
    ]
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def network_config(card: ModelCard, target: str, intra_op_num_threads: int = DEFAULT_INTRA_OP_THREADS) -> str:
    """The ``config.pbtxt`` text for one network, generated from its card."""
    if target not in TARGETS:
        raise AssemblyError(f"unknown target {target!r}; expected one of {TARGETS}")
    preferred = [b for b in PREFERRED_BATCH_SIZES if b <= card.max_batch_size]
    lines = [
        f"# Generated by drape_export.repository from {card.name}/{CARD_FILE}; do not edit.",
        f'name: "{card.model_name}"',
    ]
    if target == "cpu":
        lines += ['backend: "python"  # ONNX Runtime CPU session in 1/model.py (onnx_runner.py)']
    else:
        lines += ['platform: "tensorrt_plan"', f'default_model_filename: "{PLAN_FILE}"']
    lines.append(f"max_batch_size: {card.max_batch_size}")
    text = "\n".join(lines) + "\n"
    text += _tensor_block("input", card.inputs)
    text += _tensor_block("output", card.outputs)
    text += (
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {_dims(preferred)} ]\n"
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}\n"
        "}\n"
    )
    kind = "KIND_CPU" if target == "cpu" else "KIND_GPU"
    text += f"instance_group [ {{ count: 1, kind: {kind} }} ]\n"
    if target == "cpu":
        text += (
            'parameters { key: "intra_op_num_threads" value: { string_value: "'
            f'{intra_op_num_threads}" }} }}\n'
        )
    return text


def fill_placeholders(text: str, height: int, width: int, source: str = "config") -> str:
    """Replace ``{height}``/``{width}``; refuse any other ``{name}`` placeholder left in the text."""
    values = {"height": str(height), "width": str(width)}
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(values))
    if unknown:
        raise AssemblyError(f"{source}: unknown placeholders {unknown}; only {{height}} and {{width}} are filled")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


# ---------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ServingSources:
    """Where the python model sources and config templates live."""

    python_models: Path
    configs: Path


def serving_sources(root: str | Path | None = None) -> ServingSources:
    """Locate ``python_models/`` and ``configs/`` (defaults to the checkout next to ``drape_serving``)."""
    if root is None:
        import drape_serving

        root = Path(drape_serving.__file__).resolve().parent.parent
    root = Path(root)
    sources = ServingSources(python_models=root / "python_models", configs=root / "configs")
    for path in (sources.python_models, sources.configs):
        if not path.is_dir():
            raise AssemblyError(f"serving sources not found: {path} (is drape installed from a checkout?)")
    return sources


# --------------------------------------------------------------------------- assembly


@dataclass
class AssemblyReport:
    """What ``assemble`` produced."""

    out_dir: Path
    target: str
    resolution: tuple[int, int]
    networks: list[str] = field(default_factory=list)
    ensembles: list[str] = field(default_factory=list)
    skipped_ensembles: dict[str, str] = field(default_factory=dict)
    missing_plans: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"model repository: {self.out_dir} (target {self.target}, resolution {self.resolution[0]}x{self.resolution[1]})",
            f"  networks:  {', '.join(self.networks)}",
            f"  ensembles: {', '.join(self.ensembles) or '(none)'}",
        ]
        lines += [f"  skipped ensemble {name}: {why}" for name, why in self.skipped_ensembles.items()]
        lines += [f"  WARNING: {name} has no {PLAN_FILE}; build it with TensorRT before serving" for name in self.missing_plans]
        return "\n".join(lines)


def _resolution(cards: list[ModelCard], height: int | None, width: int | None) -> tuple[int, int]:
    found = {card.resolution for card in cards}
    if len(found) > 1:
        detail = ", ".join(f"{c.name}={c.height}x{c.width}" for c in cards)
        raise AssemblyError(f"model cards disagree on resolution ({detail}); export all networks at one resolution")
    (resolution,) = found
    if (height is not None and height != resolution[0]) or (width is not None and width != resolution[1]):
        requested = f"{height if height is not None else '*'}x{width if width is not None else '*'}"
        raise AssemblyError(
            f"requested resolution {requested} but the model cards are {resolution[0]}x{resolution[1]}"
        )
    return resolution


def _copy_network(card: ModelCard, model_dir: Path, target: str, sources: ServingSources, threads: int) -> bool:
    """Write one network model; returns False when a GPU plan is missing."""
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(network_config(card, target, threads))
    shutil.copy2(card.directory / CARD_FILE, model_dir / CARD_FILE)
    if target == "cpu":
        shutil.copy2(sources.python_models / "onnx_runner.py", version_dir / "model.py")
        # model.onnx plus any external-data files the export wrote next to it.
        for path in sorted(card.directory.iterdir()):
            if path.is_file() and path.name not in (CARD_FILE, PLAN_FILE):
                shutil.copy2(path, version_dir / path.name)
        return True
    plan = card.directory / PLAN_FILE
    if plan.is_file():
        shutil.copy2(plan, version_dir / PLAN_FILE)
        return True
    (model_dir / "README.md").write_text(
        f"# {card.model_name}: TensorRT plan missing\n\n"
        f"This GPU model expects `1/{PLAN_FILE}`, built by TensorRT from `{card.directory / ONNX_FILE}` "
        f"on the serving GPU type with the TensorRT version of the serving image, then re-assembled "
        f"(`{card.directory / PLAN_FILE}` is copied here). tritonserver will not load this model until then.\n"
    )
    return False


def _copy_python_model(model: str, source: str, sources: ServingSources, out: Path, hw: tuple[int, int]) -> None:
    model_dir = out / model
    (model_dir / "1").mkdir(parents=True)
    _write_config(model, sources, model_dir, hw)
    shutil.copy2(sources.python_models / source, model_dir / "1" / "model.py")


def _write_config(model: str, sources: ServingSources, model_dir: Path, hw: tuple[int, int]) -> None:
    template = sources.configs / f"{model}.pbtxt"
    if not template.is_file():
        raise AssemblyError(f"config template missing: {template}")
    text = fill_placeholders(template.read_text(), hw[0], hw[1], str(template))
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text)


def _build(
    cards: list[ModelCard], out: Path, target: str, hw: tuple[int, int], sources: ServingSources, threads: int
) -> AssemblyReport:
    report = AssemblyReport(out_dir=out, target=target, resolution=hw)
    reserved = {name for spec in contract.ENSEMBLES.values() for name in (spec.name, spec.preprocess_model, spec.postprocess_model)}
    available = set()
    for card in cards:
        if card.model_name in reserved:
            raise AssemblyError(f"{card.directory}: network name {card.model_name!r} clashes with a serving model name")
        if target == "cpu":
            _check_onnx_io(card)
        if not _copy_network(card, out / card.model_name, target, sources, threads):
            report.missing_plans.append(card.model_name)
        available.add(card.model_name)
        report.networks.append(card.model_name)

    for spec in contract.ENSEMBLES.values():
        missing = [name for name in spec.networks if name not in available]
        if missing:
            report.skipped_ensembles[spec.name] = f"missing networks {missing}"
            continue
        _copy_python_model(spec.preprocess_model, "preprocess.py", sources, out, hw)
        _copy_python_model(spec.postprocess_model, f"{spec.postprocess_model}.py", sources, out, hw)
        _write_config(spec.name, sources, out / spec.name, hw)
        (out / spec.name / "1").mkdir()  # Triton requires a (empty) version directory for ensembles
        report.ensembles.append(spec.name)
    if not report.ensembles:
        raise AssemblyError(f"no ensemble can be served: {report.skipped_ensembles}")

    manifest = {
        "target": target,
        "resolution": {"height": hw[0], "width": hw[1]},
        "networks": {card.model_name: str(card.directory) for card in cards},
        "ensembles": report.ensembles,
        "skipped_ensembles": report.skipped_ensembles,
        "missing_plans": report.missing_plans,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def _swap_into_place(built: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``built``; the old tree is removed only after the new one is in place."""
    if not out_dir.exists():
        built.rename(out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
    out_dir.rename(old)
    try:
        built.rename(out_dir)
    except OSError:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def assemble(
    onnx_dir: str | Path,
    out_dir: str | Path,
    target: str = "cpu",
    height: int | None = None,
    width: int | None = None,
    *,
    intra_op_num_threads: int = DEFAULT_INTRA_OP_THREADS,
    source_root: str | Path | None = None,
) -> AssemblyReport:
    """Build the Triton model repository for ``target`` ("cpu" or "gpu") at ``out_dir``.

    ``height``/``width``, when given, are what the caller expects; the cards
    are the source of truth and a mismatch is an error. Ensembles whose
    networks are not all present are skipped (listed in the report); having
    none servable is an error.
    """
    if target not in TARGETS:
        raise AssemblyError(f"unknown target {target!r}; expected one of {TARGETS}")
    cards = load_cards(onnx_dir)
    hw = _resolution(cards, height, width)
    sources = serving_sources(source_root)
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    building.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
    try:
        report = _build(cards, building, target, hw, sources, intra_op_num_threads)
        _swap_into_place(building, out_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    report.out_dir = out_dir
    return report
