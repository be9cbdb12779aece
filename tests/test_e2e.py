"""End to end over the trained quick pipeline: real networks, real tritonserver, raw tritonclient and the client.

This is the public contract as apps see it (README "Contract"): dtype and shape of every output for a 333x250
JPEG and a 1024x768 PNG over HTTP and gRPC, and INVALID_ARGUMENT naming the input for a bad image in each input.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from drape_serving import contract

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.server


def _person(width: int, height: int, fmt: str) -> bytes:
    """A synthetic person photo (seeded studio render) resized to width x height, encoded as fmt."""
    from drape_train.data.synth import render_pair

    a, b = render_pair(7)
    buf = io.BytesIO()
    Image.fromarray(a.image).resize((width, height), Image.BILINEAR).save(buf, format=fmt)
    still = io.BytesIO()
    Image.fromarray(b.cloth).save(still, format="JPEG", quality=92)
    return buf.getvalue(), still.getvalue()


JPEG_333x250, STILL = _person(333, 250, "JPEG")
PNG_1024x768, _ = _person(1024, 768, "PNG")
IMAGES = [(JPEG_333x250, (250, 333)), (PNG_1024x768, (768, 1024))]


def _client(server, protocol):
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http_url, network_timeout=120.0)
    return grpcclient.InferenceServerClient(server.grpc_url)


def _infer(server, protocol, spec: contract.EnsembleSpec, payload: list[bytes]) -> dict[str, np.ndarray]:
    """The 10-line raw tritonclient call README shows, for either protocol."""
    tc = httpclient if protocol == "http" else grpcclient
    inputs = []
    for name, data in zip(spec.input_names, payload):
        arr = np.frombuffer(data, dtype=np.uint8)[None, :]
        inp = tc.InferInput(name, list(arr.shape), "UINT8")
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    res = _client(server, protocol).infer(spec.name, inputs,
                                          outputs=[tc.InferRequestedOutput(o) for o in spec.output_names])
    return {o: res.as_numpy(o) for o in spec.output_names}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("image, hw", IMAGES, ids=["jpeg333x250", "png1024x768"])
def test_tryon_contract(real_server, protocol, image, hw):
    out = _infer(real_server, protocol, contract.TRYON, [image, STILL])["tryon_image"]
    assert out.dtype == np.uint8 and out.shape == (1, *hw, 3)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("image, hw", IMAGES, ids=["jpeg333x250", "png1024x768"])
def test_recolor_contract(real_server, protocol, image, hw):
    out = _infer(real_server, protocol, contract.RECOLOR, [image, STILL])
    rgb, mask = out["recolored_image"], out["garment_mask"]
    assert rgb.dtype == np.uint8 and rgb.shape == (1, *hw, 3)
    assert mask.dtype == np.uint8 and mask.shape == (1, *hw)
    assert set(np.unique(mask)) <= {0, 255}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("spec, bad", [(s, n) for s in (contract.TRYON, contract.RECOLOR) for n in s.input_names])
def test_bad_input_names_the_input_and_server_stays_up(real_server, protocol, spec, bad):
    payload = [b"this is not an image" if n == bad else JPEG_333x250 for n in spec.input_names]
    with pytest.raises(InferenceServerException) as info:
        _infer(real_server, protocol, spec, payload)
    status = str(info.value.status())
    assert status in ("400", "StatusCode.INVALID_ARGUMENT"), status
    assert f"{bad}: " in info.value.message()
    client = _client(real_server, protocol)
    assert client.is_server_ready() and client.is_model_ready(spec.name)
    good = _infer(real_server, protocol, spec, [JPEG_333x250, STILL])
    assert good[spec.output_names[0]].shape == (1, 250, 333, 3)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_thin_client_round_trip(real_server, protocol):
    from drape_client import BadInputError, DrapeClient

    url = real_server.grpc_url if protocol == "grpc" else real_server.http_url
    with DrapeClient(url, protocol) as c:
        assert c.ready()
        person = np.array(Image.open(io.BytesIO(JPEG_333x250)))
        rgb = c.tryon(person, STILL)                       # numpy in, bytes in
        assert rgb.shape == (250, 333, 3) and rgb.dtype == np.uint8
        rgb, mask = c.recolor(Image.fromarray(person), STILL)
        assert rgb.shape == (250, 333, 3) and mask.shape == (250, 333)
        with pytest.raises(BadInputError, match="still_image"):
            c.recolor(person, b"\x89PNG\r\n\x1a\n truncated")


def test_repository_is_built_from_trained_cards(cpu_repo):
    """Every network in the served repository comes from a trained, parity-checked export."""
    manifest = json.loads((cpu_repo / "manifest.json").read_text())
    text = json.dumps(manifest)
    for name in ("garment_seg", "human_parsing", "gmm", "tom", "recolor"):
        assert name in text
    from conftest import ONNX_DIR

    for card_path in ONNX_DIR.glob("*/card.json"):
        card = json.loads(card_path.read_text())
        assert card["onnx"]["opset"] >= 17
        assert card["onnx"]["parity_max_abs_diff"] <= 1e-3
        assert card["train"]["steps"] > 0 and card["metrics"], card_path
