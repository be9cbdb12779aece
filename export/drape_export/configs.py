"""What the generated configs are made of: the serving settings, the networks' model cards and the config text.

:class:`ServingSettings` holds the batching, instance and queue settings written into every config;
:class:`NetworkCard` / :func:`load_cards` read each network's model card and check it against the serving contract
(and its ONNX graph's I/O); :func:`network_config` generates a network's ``config.pbtxt`` from its card and the
settings, and :func:`fill_placeholders` fills the pre/post/ensemble templates of ``configs/*.pbtxt``.
:mod:`drape_export.repository` assembles the repository from them on disk and re-exports these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from drape_core import contract
from drape_core.card import CARD_FILE, CardError, ModelCard, TensorSpec, read_card
from drape_core.recolor_policy import RECOLOR_FALLBACK_MARGIN, RECOLOR_KEEP_BELOW

__all__ = [
    "AssemblyError",
    "NetworkCard",
    "ServingSettings",
    "DEFAULT_SETTINGS",
    "load_cards",
    "network_config",
    "fill_placeholders",
]

TARGETS = ("cpu", "gpu")
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
VERSION_POLICY = "version_policy: { latest: { num_versions: 1 } }"


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
      garment by less than this mean CIE76 (`drape_core.recolor_policy.RECOLOR_KEEP_BELOW`; 0 = always apply).
    * ``recolor_fallback_margin``: recolor_postprocess serves the classical Gaussian transfer instead of the network's
      colour where that is closer to the still's shading-free colours by more than this
      (`drape_core.recolor_policy.RECOLOR_FALLBACK_MARGIN`; inf = never).
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
class NetworkCard:
    """A network's model card (``drape_core.card``) and the directory it was read from, checked for assembly."""

    card: ModelCard
    directory: Path

    name = property(lambda self: self.card.name)
    family = property(lambda self: self.card.family)
    inputs = property(lambda self: tuple(self.card.inputs))
    outputs = property(lambda self: tuple(self.card.outputs))
    max_batch_size = property(lambda self: self.card.max_batch_size)
    resolution = property(lambda self: self.card.hw)

    @property
    def model_name(self) -> str:
        """The Triton model name (differs from the card name only to avoid clashing with an ensemble)."""
        spec = contract.NETWORKS.get(self.name)
        return spec.model_name if spec else self.name

    @classmethod
    def from_file(cls, path: Path) -> "NetworkCard":
        try:
            card = cls(read_card(path), path.parent)
        except CardError as exc:
            raise AssemblyError(str(exc)) from None
        card.validate()
        return card

    def validate(self) -> None:
        """Check the card against itself and, for known networks, against the serving contract."""
        where = self.directory / CARD_FILE
        problems = []
        if self.directory.name != self.name:
            problems.append(f"card name {self.name!r} differs from its directory name {self.directory.name!r}")
        if self.max_batch_size < contract.MAX_BATCH_SIZE:
            problems.append(
                f"max_batch_size {self.max_batch_size} is below the ensembles' {contract.MAX_BATCH_SIZE}"
            )
        height, width = self.resolution
        for tensor in self.inputs + self.outputs:
            if len(tensor.shape) < 2 or tensor.shape[-2:] != (height, width):
                problems.append(
                    f"tensor {tensor.name!r} shape {list(tensor.shape)} does not end in the resolution "
                    f"[{height}, {width}]"
                )
        spec = contract.NETWORKS.get(self.name)
        if spec is not None:
            problems += _contract_mismatch("input", spec.inputs, self.inputs)
            problems += _contract_mismatch("output", spec.outputs, self.outputs)
        if problems:
            raise AssemblyError(f"{where}: " + "; ".join(problems))


def _contract_mismatch(kind: str, expected: Iterable[tuple[str, int]], actual: Iterable[TensorSpec]) -> list[str]:
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


def load_cards(onnx_dir: str | Path) -> list[NetworkCard]:
    """Read and validate every ``<onnx_dir>/<name>/card.json`` (sorted by name)."""
    root = Path(onnx_dir)
    if not root.is_dir():
        raise AssemblyError(f"ONNX directory not found: {root}")
    cards = [NetworkCard.from_file(p) for p in sorted(root.glob(f"*/{CARD_FILE}"))]
    if not cards:
        raise AssemblyError(f"no networks in {root}: expected <name>/{CARD_FILE} next to <name>/{ONNX_FILE}")
    return cards


def _check_onnx_io(card: NetworkCard) -> list[str]:
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


def _tensor_block(kind: str, tensors: Iterable[TensorSpec]) -> str:
    entries = [
        f'  {{\n    name: "{t.name}"\n    data_type: {t.triton_type}\n    dims: [ {_dims(t.shape)} ]\n  }}'
        for t in tensors
    ]
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def network_config(
    card: NetworkCard,
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


def _warmup_block(card: NetworkCard, batch: int) -> str:
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
    """Replace ``{height}``/``{width}``, ``{max_batch}`` (``contract.MAX_BATCH_SIZE``) and the names in ``values``;
    refuse any other ``{name}`` left in the text."""
    known = {"height": str(height), "width": str(width), "max_batch": str(contract.MAX_BATCH_SIZE),
             **{k: str(v) for k, v in (values or {}).items()}}
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(known))
    if unknown:
        raise AssemblyError(f"{source}: unknown placeholders {unknown}; known: {sorted(known)}")
    return _PLACEHOLDER.sub(lambda m: known[m.group(1)], text)
