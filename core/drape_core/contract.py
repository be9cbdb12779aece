"""The public serving contract, in one place.

Apps depend on these names, dtypes and limits; the Triton configs, the
assembly step, the client and the tests all import them from here instead of
repeating string literals. Changing anything in this module is a breaking API
change for clients.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "TensorSpec",
    "EnsembleSpec",
    "NetworkSpec",
    "TRYON",
    "RECOLOR",
    "ENSEMBLES",
    "NETWORKS",
    "MAX_BATCH_SIZE",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_SIDE",
    "MAX_IMAGE_PIXELS",
    "DEFAULT_RESOLUTION",
    "SUPPORTED_RESOLUTIONS",
    "IMAGE_FORMATS",
    "PREPROCESS_OUTPUTS",
    "NUM_PARSING_LABELS",
]


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as Triton sees it: name, Triton datatype (``"UINT8"``, ``"FP32"``) and dims without batch."""

    name: str
    datatype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class EnsembleSpec:
    """A public ensemble: what a client sends and gets back (one image pair per request)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess_model: str
    postprocess_model: str
    networks: tuple[str, ...]  # Triton model names of the networks the ensemble runs

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


@dataclass(frozen=True)
class NetworkSpec:
    """A network's I/O as ``(name, channels)``; spatial dims are the model resolution H x W.

    ``name`` is the network (model card) name; ``model_name`` is its Triton
    model name, which differs only where the card name would collide with an
    ensemble (the ``recolor`` network is served as ``recolor_net`` because
    ``recolor`` is the public ensemble).
    """

    name: str
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[str, int], ...]
    model_name: str = ""

    def __post_init__(self) -> None:
        if not self.model_name:
            object.__setattr__(self, "model_name", self.name)


# Server-side batching across requests; each client request carries one pair.
MAX_BATCH_SIZE = 8

# Input limits: enforced by the preprocess model; violations are INVALID_ARGUMENT.
MAX_IMAGE_BYTES = 16 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
IMAGE_FORMATS = ("JPEG", "PNG")

# Model resolution (height, width). Read the real one from model cards/configs.
DEFAULT_RESOLUTION = (256, 192)
SUPPORTED_RESOLUTIONS = ((256, 192), (512, 384), (1024, 768))

NUM_PARSING_LABELS = 20  # LIP human-parsing labels

_ENCODED_IMAGE_DIMS = (-1,)
_RGB_IMAGE_DIMS = (-1, -1, 3)

TRYON = EnsembleSpec(
    name="tryon",
    inputs=(
        TensorSpec("person_image", "UINT8", _ENCODED_IMAGE_DIMS),
        TensorSpec("garment_image", "UINT8", _ENCODED_IMAGE_DIMS),
    ),
    outputs=(TensorSpec("tryon_image", "UINT8", _RGB_IMAGE_DIMS),),
    preprocess_model="tryon_preprocess",
    postprocess_model="tryon_postprocess",
    networks=("human_parsing", "garment_seg", "gmm", "tom"),
)

RECOLOR = EnsembleSpec(
    name="recolor",
    inputs=(
        TensorSpec("on_model_image", "UINT8", _ENCODED_IMAGE_DIMS),
        TensorSpec("still_image", "UINT8", _ENCODED_IMAGE_DIMS),
    ),
    outputs=(
        TensorSpec("recolored_image", "UINT8", _RGB_IMAGE_DIMS),
        TensorSpec("garment_mask", "UINT8", (-1, -1)),
    ),
    preprocess_model="recolor_preprocess",
    postprocess_model="recolor_postprocess",
    networks=("human_parsing", "garment_seg", "recolor_net"),
)

ENSEMBLES = {spec.name: spec for spec in (TRYON, RECOLOR)}

# Outputs of both preprocess models: the two letterboxed FP32 tensors and the
# decoded first image (full resolution, used by postprocess to composite).
PREPROCESS_OUTPUTS = ("image_a", "image_b", "orig_a")

NETWORKS = {
    spec.name: spec
    for spec in (
        NetworkSpec("garment_seg", inputs=(("image", 3),), outputs=(("mask_logits", 1),)),
        NetworkSpec("human_parsing", inputs=(("image", 3),), outputs=(("parsing_logits", NUM_PARSING_LABELS),)),
        NetworkSpec(
            "gmm",
            inputs=(("parsing_logits", NUM_PARSING_LABELS), ("garment", 3), ("garment_mask_logits", 1)),
            outputs=(("warped_garment", 3), ("warped_mask", 1)),
        ),
        NetworkSpec(
            "tom",
            inputs=(("person", 3), ("parsing_logits", NUM_PARSING_LABELS), ("warped_garment", 3), ("warped_mask", 1)),
            outputs=(("tryon", 3), ("edit_mask", 1)),
        ),
        NetworkSpec(
            "recolor",
            inputs=(
                ("on_model", 3),
                ("still", 3),
                ("parsing_logits", NUM_PARSING_LABELS),
                ("still_mask_logits", 1),
            ),
            outputs=(("recolored", 3), ("garment_mask", 1)),
            model_name="recolor_net",
        ),
    )
}
