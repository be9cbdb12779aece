"""Assemble a Triton model repository from exported networks and the serving sources.

Input: ``onnx_dir/<network>/{model.onnx, card.json}`` for every network the
export produced (plus ``model.plan`` for the GPU target). Output: a complete
Triton model repository:

* one model per network, its ``config.pbtxt`` generated from the model card
  (``target="cpu"``: a python-backend model running ONNX Runtime, i.e.
  ``1/model.py`` = ``python_models/onnx_runner.py`` + ``1/model.onnx``;
  ``target="gpu"``: a ``tensorrt_plan`` model expecting ``1/model.plan``);
* the pre/post python models (``python_models/{preprocess,postprocess}.py`` as ``<model>/1/model.py``)
  and the ensembles, their configs from ``configs/*.pbtxt`` with ``{height}``
  and ``{width}`` filled from the cards.

Versions: every model config carries ``version_policy: { latest: { num_versions: 1 } }``
and the first assembly writes version ``1/``. Re-assembling into an existing
repository of the same target, resolution and model set writes each model's
next version (``2/``, ``3/``...) beside the current one: the whole new tree is
first built in a temporary directory next to ``out_dir``, then each new
version directory is moved in under a hidden temporary name and renamed to its
number, so Triton (in poll/explicit mode) only ever sees complete versions; the
config and card are replaced by rename after it. The previous version is kept
(for rollback: delete the newest version directory) and older ones are pruned
(renamed to a hidden name first, then deleted). Any other change (another
resolution, target or model set) cannot be served by the old configs, so the
whole repository is swapped instead, in one step where the filesystem supports
``renameat2(RENAME_EXCHANGE)`` (Linux local filesystems). A failed or killed
build leaves the previous repository untouched (tests/reliability/kill_assembly.py);
assemblies next to one repository run one at a time (``flock`` on its parent
directory) and remove the staging trees killed runs left there.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from drape_serving import contract
from drape_serving.prepost import RECOLOR_FALLBACK_MARGIN, RECOLOR_KEEP_BELOW
from drape_serving.plan_check import PlanMismatchError, Runtime, check_card, detect_runtime

__all__ = [
    "AssemblyError",
    "CardTensor",
    "ModelCard",
    "AssemblyReport",
    "ServingSettings",
    "DEFAULT_SETTINGS",
    "assemble",
    "load_cards",
    "network_config",
    "fill_placeholders",
    "serving_sources",
]

TARGETS = ("cpu", "gpu")
CARD_FILE = "card.json"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
MANIFEST_FILE = "manifest.json"
_CARD_FORMAT_VERSION = 1
_CARD_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
VERSION_POLICY = "version_policy: { latest: { num_versions: 1 } }"
KEEP_VERSIONS = 2  # the new version and the previous one (rollback)


class AssemblyError(RuntimeError):
    """The inputs cannot make a consistent repository (bad/missing cards, resolution mismatch...)."""


@dataclass(frozen=True)
class ServingSettings:
    """Batching, instance and queue settings written into the generated configs.

    The defaults were chosen by measurement on the 2-core CPU reference machine with
    ``python -m drape_export sweep`` (BENCHMARKS.md, "Serving configuration sweep"); re-run the sweep on other
    hardware and pass the winners with ``python -m drape_export repo --instances ... --intra-op-threads ...``.

    * ``instances`` / ``intra_op_threads``: instance_group count of every network model and ONNX Runtime
      intra-op threads per instance (CPU target; 0 = one per core).
    * ``max_queue_delay_us`` / ``preferred_batch_sizes``: the networks' dynamic batcher.
    * ``max_queue_size``: backpressure. Triton 2.51 has no ``ensemble_scheduling.max_inflight_requests``, so
      every composing model's dynamic batcher gets ``default_queue_policy { max_queue_size }``: a request that
      finds the queue full is rejected at once with UNAVAILABLE ("Exceeds maximum queue size") instead of
      queueing without bound (postprocess models too). The preprocess models (the ensembles' entry step, where
      decoded full-resolution images are created) get the smaller ``entry_queue_size``.
    * ``prepost_instances``: instance count of the python pre/post models.
    * ``recolor_keep_below``: recolor_postprocess returns the photo unchanged where the network would change the
      garment by less than this mean CIE76 (`drape_serving.prepost.RECOLOR_KEEP_BELOW`; 0 = always apply).
    * ``recolor_fallback_margin``: recolor_postprocess serves the classical Gaussian transfer instead of the network's
      colour where that is closer to the still's shading-free colours by more than this
      (`drape_serving.prepost.RECOLOR_FALLBACK_MARGIN`; inf = never).
    * ``warmup_batch``: batch size of the zero warmup request every network instance runs at load (``model_warmup``;
      capped at the network's max_batch_size; 0 = no warmup; None = by target). CPU default: the max batch. ONNX
      Runtime's arena grows with the largest batch an instance has run, so warming at the largest batch puts its
      memory at the high-water mark before the server is ready (the soak's memory bar: RELIABILITY.md); that
      memory is then held, and at 1024x768 a CPU batch of 8 costs GiBs per instance: lower it there. GPU default:
      1. A TensorRT context allocates its activation memory for the profile's largest shape when it is created, so
      batch 1 already pays the first-request cost, and the host buffers of a zero batch of 8 at 1024x768 (~0.6 GB
      per instance) would only crowd the container's memory limit while the models load.
    """

    instances: int = 2            # measured: 2 x 1 thread beats 1 x 1 (+30% req/s at 4 clients) and 1 x 2 (2x)
    intra_op_threads: int = 1
    max_queue_delay_us: int = 0   # measured: 2000 us cost 15% req/s at 4 clients and gained nothing at 1
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_size: int = 32
    entry_queue_size: int = 16
    prepost_instances: int = 2    # measured: a tie on throughput, lower 1-client p50 and 4-client p95
    warmup_batch: int | None = None   # by target: cpu = max batch (soak RSS growth 7.8% -> 2.3%), gpu = 1
    recolor_keep_below: float = RECOLOR_KEEP_BELOW
    recolor_fallback_margin: float = RECOLOR_FALLBACK_MARGIN

    def __post_init__(self) -> None:
        problems = []
        for name in ("instances", "prepost_instances", "max_queue_size", "entry_queue_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.intra_op_threads < 0:
            problems.append(f"intra_op_threads must be >= 0 (0 = one per core), got {self.intra_op_threads}")
        if self.warmup_batch is not None and self.warmup_batch < 0:
            problems.append(f"warmup_batch must be >= 0 (0 = no warmup), got {self.warmup_batch}")
        if not self.recolor_keep_below >= 0:
            problems.append(f"recolor_keep_below must be >= 0 (mean CIE76; 0 = off), got {self.recolor_keep_below}")
        if not self.recolor_fallback_margin >= 0:
            problems.append(f"recolor_fallback_margin must be >= 0 (inf = never fall back), got {self.recolor_fallback_margin}")
        if self.max_queue_delay_us < 0:
            problems.append(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if not self.preferred_batch_sizes or any(b < 1 for b in self.preferred_batch_sizes):
            problems.append(f"preferred_batch_sizes must be positive, got {list(self.preferred_batch_sizes)}")
        if problems:
            raise AssemblyError("invalid serving settings: " + "; ".join(problems))

    def template_values(self) -> dict[str, str]:
        """Placeholders the pre/post/ensemble config templates may use besides {height}/{width}."""
        return {
            "prepost_instances": str(self.prepost_instances),
            "entry_queue_size": str(self.entry_queue_size),
            "max_queue_size": str(self.max_queue_size),
            "recolor_keep_below": repr(float(self.recolor_keep_below)),
            "recolor_fallback_margin": repr(float(self.recolor_fallback_margin)),
        }


DEFAULT_SETTINGS = ServingSettings()
DEFAULT_INTRA_OP_THREADS = DEFAULT_SETTINGS.intra_op_threads


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


def _check_onnx_io(card: ModelCard) -> list[str]:
    """Check that the graph's I/O names match the card; return the external-data files the graph references.

    Skipped (returns ``[]``) when onnx is not installed.
    """
    try:
        import onnx
    except ImportError:
        return []
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
    external = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            external.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(external)


# ---------------------------------------------------------------------------- configs


def _dims(shape: Iterable[int]) -> str:
    return ", ".join(str(d) for d in shape)


def _tensor_block(kind: str, tensors: Iterable[CardTensor]) -> str:
    entries = [
        f'  {{\n    name: "{t.name}"\n    data_type: {t.triton_type}\n    dims: [ {_dims(t.shape)} ]\n  }}'
        for t in tensors
    ]
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def network_config(
    card: ModelCard,
    target: str,
    intra_op_num_threads: int | None = None,
    *,
    settings: ServingSettings = DEFAULT_SETTINGS,
) -> str:
    """The ``config.pbtxt`` text for one network, generated from its card and the serving settings."""
    if target not in TARGETS:
        raise AssemblyError(f"unknown target {target!r}; expected one of {TARGETS}")
    threads = settings.intra_op_threads if intra_op_num_threads is None else intra_op_num_threads
    preferred = [b for b in settings.preferred_batch_sizes if b <= card.max_batch_size] or [card.max_batch_size]
    lines = [
        f"# Generated by drape_export.repository from {card.name}/{CARD_FILE}; do not edit.",
        f'name: "{card.model_name}"',
    ]
    if target == "cpu":
        lines += ['backend: "python"  # ONNX Runtime CPU session in <version>/model.py (onnx_runner.py)']
    else:
        lines += ['platform: "tensorrt_plan"', f'default_model_filename: "{PLAN_FILE}"']
    lines.append(f"max_batch_size: {card.max_batch_size}")
    lines.append(VERSION_POLICY)
    text = "\n".join(lines) + "\n"
    text += _tensor_block("input", card.inputs)
    text += _tensor_block("output", card.outputs)
    text += (
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {_dims(preferred)} ]\n"
        f"  max_queue_delay_microseconds: {settings.max_queue_delay_us}\n"
        f"  default_queue_policy {{ max_queue_size: {settings.max_queue_size} }}  # full queue: reject (UNAVAILABLE)\n"
        "}\n"
    )
    kind = "KIND_CPU" if target == "cpu" else "KIND_GPU"
    text += f"instance_group [ {{ count: {settings.instances}, kind: {kind} }} ]\n"
    warmup = settings.warmup_batch
    if warmup is None:
        warmup = card.max_batch_size if target == "cpu" else 1
    text += _warmup_block(card, warmup)
    if target == "cpu":
        text += (
            'parameters { key: "intra_op_num_threads" value: { string_value: "'
            f'{threads}" }} }}\n'
        )
    return text


def _warmup_block(card: ModelCard, batch: int) -> str:
    """One zero warmup request per instance at load time, at ``batch`` (capped at the max batch; 0 = none): on CPU
    the default is the largest batch, so ONNX Runtime's arena reaches its high-water mark before the model is
    ready instead of stepping up under traffic the first time the dynamic batcher forms a full batch (the soak saw
    exactly those steps: RELIABILITY.md); on GPU batch 1 (ServingSettings.warmup_batch says why). Either way the
    first real request does not pay for it."""
    batch = min(batch, card.max_batch_size)
    if batch == 0:
        return ""
    inputs = "".join(
        f'    inputs {{ key: "{t.name}" value: {{ data_type: {t.triton_type} dims: [ {_dims(t.shape)} ] zero_data: true }} }}\n'
        for t in card.inputs)
    return ("model_warmup [\n  {\n"
            f'    name: "zeros_batch_{batch}"\n    batch_size: {batch}\n{inputs}'
            "  }\n]\n")


def fill_placeholders(
    text: str, height: int, width: int, source: str = "config", values: Mapping[str, object] | None = None
) -> str:
    """Replace ``{height}``/``{width}`` (and the names in ``values``); refuse any other ``{name}`` left in the text."""
    known = {"height": str(height), "width": str(width), **{k: str(v) for k, v in (values or {}).items()}}
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(known))
    if unknown:
        raise AssemblyError(f"{source}: unknown placeholders {unknown}; known: {sorted(known)}")
    return _PLACEHOLDER.sub(lambda m: known[m.group(1)], text)


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
    """What ``assemble`` produced. ``mode`` is "new", "replaced" (whole-tree swap) or "versioned"."""

    out_dir: Path
    target: str
    resolution: tuple[int, int]
    networks: list[str] = field(default_factory=list)
    ensembles: list[str] = field(default_factory=list)
    skipped_ensembles: dict[str, str] = field(default_factory=dict)
    missing_plans: list[str] = field(default_factory=list)
    plan_notes: list[str] = field(default_factory=list)
    mode: str = "new"
    versions: dict[str, int] = field(default_factory=dict)
    replaced_because: str = ""

    def summary(self) -> str:
        version = sorted(set(self.versions.values()))
        lines = [
            f"model repository: {self.out_dir} (target {self.target}, resolution {self.resolution[0]}x{self.resolution[1]})",
            f"  networks:  {', '.join(self.networks)}",
            f"  ensembles: {', '.join(self.ensembles) or '(none)'}",
            f"  {self.mode}: model version {', '.join(map(str, version))}"
            + (f" (whole repository swapped: {self.replaced_because})" if self.replaced_because else ""),
        ]
        lines += [f"  skipped ensemble {name}: {why}" for name, why in self.skipped_ensembles.items()]
        lines += [f"  WARNING: {name} has no {PLAN_FILE}; build it with TensorRT before serving" for name in self.missing_plans]
        lines += [f"  note: {note}" for note in self.plan_notes]
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


def _copy_network(
    card: ModelCard,
    model_dir: Path,
    target: str,
    sources: ServingSources,
    settings: ServingSettings,
    external: list[str],
    runtime: Runtime | None,
    notes: list[str],
) -> bool:
    """Write one network model (version ``1/`` of the staging tree); returns False when a GPU plan is missing."""
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(network_config(card, target, settings=settings))
    for dest in (model_dir, version_dir):  # the version's own card is what the plan pre-start check reads
        shutil.copy2(card.directory / CARD_FILE, dest / CARD_FILE)
    if target == "cpu":
        shutil.copy2(sources.python_models / "onnx_runner.py", version_dir / "model.py")
        for name in [ONNX_FILE, *external]:
            shutil.copy2(card.directory / name, version_dir / name)
        return True
    plan = card.directory / PLAN_FILE
    if plan.is_file():
        try:
            notes += check_card(card.raw, runtime or Runtime(), f"{card.directory / PLAN_FILE}")
        except PlanMismatchError as exc:
            raise AssemblyError(str(exc)) from None
        shutil.copy2(plan, version_dir / PLAN_FILE)
        return True
    (model_dir / "README.md").write_text(
        f"# {card.model_name}: TensorRT plan missing\n\n"
        f"This GPU model expects `<version>/{PLAN_FILE}`, built by TensorRT from `{card.directory}` "
        f"(`python -m drape_export trt --onnx-dir {card.directory.parent}`) on the serving GPU type with the "
        f"TensorRT version of the serving image, then re-assembled (`{card.directory / PLAN_FILE}` is copied "
        "here). tritonserver will not load this model until then.\n"
    )
    return False


def _write_config(
    model: str, sources: ServingSources, model_dir: Path, hw: tuple[int, int], settings: ServingSettings
) -> None:
    template = sources.configs / f"{model}.pbtxt"
    if not template.is_file():
        raise AssemblyError(f"config template missing: {template}")
    text = fill_placeholders(template.read_text(), hw[0], hw[1], str(template), settings.template_values())
    if "version_policy" not in text:
        text += VERSION_POLICY + "\n"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text)


def _copy_python_model(
    model: str, source: str, sources: ServingSources, out: Path, hw: tuple[int, int], settings: ServingSettings
) -> None:
    model_dir = out / model
    (model_dir / "1").mkdir(parents=True)
    _write_config(model, sources, model_dir, hw, settings)
    shutil.copy2(sources.python_models / source, model_dir / "1" / "model.py")


def _build(
    cards: list[ModelCard],
    out: Path,
    target: str,
    hw: tuple[int, int],
    sources: ServingSources,
    settings: ServingSettings,
    runtime: Runtime | None,
) -> AssemblyReport:
    """Write a complete repository (every model at version 1) into the empty directory ``out``."""
    report = AssemblyReport(out_dir=out, target=target, resolution=hw)
    if target == "gpu" and runtime is None and any((c.directory / PLAN_FILE).is_file() for c in cards):
        runtime = detect_runtime()  # once: the plans of every network are checked against the same runtime
    reserved = {name for spec in contract.ENSEMBLES.values() for name in (spec.name, spec.preprocess_model, spec.postprocess_model)}
    available = set()
    for card in cards:
        if card.model_name in reserved:
            raise AssemblyError(f"{card.directory}: network name {card.model_name!r} clashes with a serving model name")
        external = _check_onnx_io(card) if target == "cpu" else []
        if not _copy_network(card, out / card.model_name, target, sources, settings, external, runtime, report.plan_notes):
            report.missing_plans.append(card.model_name)
        available.add(card.model_name)
        report.networks.append(card.model_name)

    for spec in contract.ENSEMBLES.values():
        missing = [name for name in spec.networks if name not in available]
        if missing:
            report.skipped_ensembles[spec.name] = f"missing networks {missing}"
            continue
        _copy_python_model(spec.preprocess_model, "preprocess.py", sources, out, hw, settings)
        _copy_python_model(spec.postprocess_model, "postprocess.py", sources, out, hw, settings)
        _write_config(spec.name, sources, out / spec.name, hw, settings)
        (out / spec.name / "1").mkdir()  # Triton requires a (empty) version directory for ensembles
        report.ensembles.append(spec.name)
    if not report.ensembles:
        raise AssemblyError(f"no ensemble can be served: {report.skipped_ensembles}")
    report.versions = {p.name: 1 for p in out.iterdir() if p.is_dir()}
    _write_manifest(out, report, cards, settings)
    return report


def _write_manifest(out: Path, report: AssemblyReport, cards: list[ModelCard], settings: ServingSettings) -> None:
    manifest = {
        "target": report.target,
        "resolution": {"height": report.resolution[0], "width": report.resolution[1]},
        "networks": {card.model_name: str(card.directory) for card in cards},
        "ensembles": report.ensembles,
        "skipped_ensembles": report.skipped_ensembles,
        "missing_plans": report.missing_plans,
        "versions": dict(sorted(report.versions.items())),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
    }
    tmp = out / f".{MANIFEST_FILE}.tmp-{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST_FILE)


def _read_manifest(repo: Path) -> dict | None:
    try:
        return json.loads((repo / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None


def _incompatibility(existing: Path, built: Path) -> str:
    """Why the new tree cannot be published as new versions of ``existing`` ("" when it can)."""
    old, new = _read_manifest(existing), _read_manifest(built)
    if old is None:
        return f"no readable {MANIFEST_FILE} in the existing repository"
    for key in ("target", "resolution"):
        if old.get(key) != new.get(key):
            return f"{key} changes from {old.get(key)} to {new.get(key)}"
    old_models = sorted(p.name for p in existing.iterdir() if p.is_dir() and not p.name.startswith("."))
    new_models = sorted(p.name for p in built.iterdir() if p.is_dir())
    if old_models != new_models:
        return f"the model set changes from {old_models} to {new_models}"
    return ""


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _replace_file(src: Path, dest: Path) -> None:
    """Move ``src`` over ``dest`` by rename (readers see the old or the new file, never half of one)."""
    os.replace(src, dest)


def _publish_versions(built: Path, out_dir: Path, report: AssemblyReport) -> None:
    """Move each model of ``built`` into ``out_dir`` as that model's next version, then its config and card."""
    for staged in sorted(p for p in built.iterdir() if p.is_dir()):
        model_dir = out_dir / staged.name
        version = max(_versions(model_dir), default=0) + 1
        incoming = model_dir / f".{version}.incoming-{secrets.token_hex(4)}"
        (staged / "1").rename(incoming)  # same filesystem: the staging tree lives next to out_dir
        incoming.rename(model_dir / str(version))  # the version appears complete, in one step
        for name in ("config.pbtxt", CARD_FILE, "README.md"):
            if (staged / name).is_file():
                _replace_file(staged / name, model_dir / name)
        report.versions[staged.name] = version
    manifest = _read_manifest(built) or {}
    manifest["versions"] = dict(sorted(report.versions.items()))
    tmp = out_dir / f".{MANIFEST_FILE}.tmp-{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    _replace_file(tmp, out_dir / MANIFEST_FILE)
    for model_dir in (p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for old in _versions(model_dir)[:-KEEP_VERSIONS]:
            # hide it in one rename first: a kill during the deletion must not leave a partial version in view
            doomed = model_dir / f".{old}.pruned-{secrets.token_hex(4)}"
            (model_dir / str(old)).rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        for stale in [*model_dir.glob(".*.incoming-*"), *model_dir.glob(".*.pruned-*")]:  # an interrupted run's
            shutil.rmtree(stale, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the OS or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap_into_place(built: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``built``; the old tree is removed only after the new one is in place.

    Where the filesystem can, the two trees are exchanged in one step, so a kill at any moment leaves a complete
    repository at ``out_dir`` (the old tree then sits at ``built``, which the caller removes); elsewhere two
    renames leave ``out_dir`` missing for an instant."""
    if not out_dir.exists():
        built.rename(out_dir)
        return
    if _exchange(built, out_dir):
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
    intra_op_num_threads: int | None = None,
    settings: ServingSettings = DEFAULT_SETTINGS,
    plan_runtime: Runtime | None = None,
    source_root: str | Path | None = None,
) -> AssemblyReport:
    """Build the Triton model repository for ``target`` ("cpu" or "gpu") at ``out_dir``.

    ``height``/``width``, when given, are what the caller expects; the cards
    are the source of truth and a mismatch is an error. Ensembles whose
    networks are not all present are skipped (listed in the report); having
    none servable is an error. ``intra_op_num_threads`` overrides
    ``settings.intra_op_threads``. GPU plans are checked against
    ``plan_runtime`` (default: this machine, fields it cannot detect are
    reported as unverified notes). See the module docstring for versions.
    """
    if target not in TARGETS:
        raise AssemblyError(f"unknown target {target!r}; expected one of {TARGETS}")
    if intra_op_num_threads is not None:
        settings = ServingSettings(**{**asdict(settings), "intra_op_threads": intra_op_num_threads})
    cards = load_cards(onnx_dir)
    hw = _resolution(cards, height, width)
    sources = serving_sources(source_root)
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        building = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
        building.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
        try:
            report = _build(cards, building, target, hw, sources, settings, plan_runtime)
            why = _incompatibility(out_dir, building) if out_dir.exists() else ""
            if not out_dir.exists():
                _swap_into_place(building, out_dir)
                report.mode = "new"
            elif why:
                _swap_into_place(building, out_dir)
                report.mode, report.replaced_because = "replaced", why
            else:
                _publish_versions(building, out_dir, report)
                report.mode = "versioned"
        finally:
            shutil.rmtree(building, ignore_errors=True)
    report.out_dir = out_dir
    return report


@contextlib.contextmanager
def _exclusive(out_dir: Path):
    """One assembly at a time next to a repository (``flock`` on the parent directory: no lock file, released by
    the kernel when its holder dies). Holding it, the staging trees left there belong to killed runs: removed.
    Where the filesystem refuses the lock, nothing is removed."""
    fd = os.open(out_dir.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            yield
            return
        for stale in [*out_dir.parent.glob(f".{out_dir.name}.building-*"), *out_dir.parent.glob(f".{out_dir.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        os.close(fd)
