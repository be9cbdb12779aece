"""Thin typed client for the `tryon` and `recolor` ensembles (gRPC by default, HTTP selectable). No torch.

    from drape_client import DrapeClient
    with DrapeClient("localhost:8001") as c:
        rgb = c.tryon("person.jpg", "garment.jpg")            # uint8 [H, W, 3]
        rgb, mask = c.recolor("on_model.jpg", "still.jpg")     # uint8 [H, W, 3], uint8 [H, W]
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Literal, Union

import numpy as np
from PIL import Image

from drape_serving import contract

ImageLike = Union[str, Path, bytes, bytearray, np.ndarray, Image.Image]


class DrapeError(RuntimeError):
    """Base class: every failure a call can raise."""


class BadInputError(DrapeError):
    """The server rejected an input (INVALID_ARGUMENT); the message names it."""


class ServerError(DrapeError):
    """The server failed to process a valid request."""


def encode(image: ImageLike, name: str) -> bytes:
    """Bytes to send for `image`: files and bytes go as they are; arrays and PIL images are PNG-encoded."""
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise BadInputError(f"{name}: numpy image must be uint8 [H,W] or [H,W,C], got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise BadInputError(f"{name}: unsupported image type {type(image).__name__}")


class DrapeClient:
    def __init__(self, url: str = "localhost:8001", protocol: Literal["grpc", "http"] = "grpc",
                 timeout_s: float = 60.0):
        self.protocol = protocol
        self.timeout_s = timeout_s
        if protocol == "grpc":
            import tritonclient.grpc as tc
        elif protocol == "http":
            import tritonclient.http as tc
        else:
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        self._tc = tc
        kw = {} if protocol == "grpc" else {"connection_timeout": timeout_s, "network_timeout": timeout_s}
        self._client = tc.InferenceServerClient(url, **kw)

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready()) and all(
                self._client.is_model_ready(m) for m in contract.ENSEMBLES)
        except Exception:
            return False

    def _infer(self, model: str, named: dict[str, ImageLike], outputs: list[str]) -> dict[str, np.ndarray]:
        tc = self._tc
        inputs = []
        for name, image in named.items():
            data = np.frombuffer(encode(image, name), dtype=np.uint8)[None, :]
            inp = tc.InferInput(name, list(data.shape), "UINT8")
            inp.set_data_from_numpy(data)
            inputs.append(inp)
        outs = [tc.InferRequestedOutput(o) for o in outputs]
        kw = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        try:
            res = self._client.infer(model, inputs, outputs=outs, **kw)
        except Exception as e:  # tritonclient raises InferenceServerException for both protocols
            status = str(getattr(e, "status", lambda: "")() or "")
            msg = getattr(e, "message", lambda: str(e))() or str(e)
            if "INVALID_ARG" in status or status == "400" or "INVALID_ARG" in str(e):
                raise BadInputError(f"{model}: {msg}") from e
            raise ServerError(f"{model}: {status} {msg}".strip()) from e
        return {o: res.as_numpy(o)[0] for o in outputs}

    def _call(self, spec: contract.EnsembleSpec, images: tuple[ImageLike, ...]) -> tuple[np.ndarray, ...]:
        out = self._infer(spec.name, dict(zip(spec.input_names, images)), list(spec.output_names))
        return tuple(out[o] for o in spec.output_names)

    def tryon(self, person: ImageLike, garment: ImageLike) -> np.ndarray:
        """The person wearing the garment: uint8 RGB [H, W, 3] at the person image's size."""
        return self._call(contract.TRYON, (person, garment))[0]

    def recolor(self, on_model: ImageLike, still: ImageLike) -> tuple[np.ndarray, np.ndarray]:
        """On-model photo recoloured to the still's garment colour, and the garment mask (255 on garment)."""
        img, mask = self._call(contract.RECOLOR, (on_model, still))
        return img, mask
