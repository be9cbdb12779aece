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

from drape_core import contract

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
        per = card["onnx"]["parity_outputs"]     # each output within its own tolerance (test_export_onnx)
        assert all(r[w]["max_abs"] <= r["tolerance"]["max_abs"] for r in per.values() for w in ("random", "real"))
        assert card["train"]["steps"] > 0 and card["metrics"], card_path


# ------------------------------------------- served ensembles == the same pipeline run in-process (acceptance)


def _render(width: int, height: int, fmt: str, mode: str = "RGB", seed: int = 11, **save) -> bytes:
    """A studio render (person in a garment) resized to width x height, converted to ``mode``, encoded."""
    from drape_train.data.synth import render_pair

    a, _ = render_pair(seed)
    img = Image.fromarray(a.image).resize((width, height), Image.BILINEAR)
    if mode == "I;16":  # 16-bit grayscale: the 8-bit luma scaled to the full 16-bit range
        img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)
    elif mode == "RGBA":  # a horizontal alpha ramp: transparent on the left, opaque on the right
        alpha = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
        img = Image.fromarray(np.dstack([np.asarray(img), alpha]), "RGBA")
    elif mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def _rgb48_png(width: int, height: int) -> bytes:
    """16 bits per channel RGB (Pillow cannot write it; OpenCV can)."""
    import cv2

    rgb = np.asarray(Image.open(io.BytesIO(_render(width, height, "PNG"))).convert("RGB"), np.uint16) * 257
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def reference(cpu_repo):
    from drape_serving.reference import ReferencePipeline

    return ReferencePipeline(cpu_repo)


def _assert_matches(served: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Acceptance bound: within 1 intensity level on at least 99.9% of the values."""
    assert served.shape == ref.shape and served.dtype == ref.dtype == np.uint8, (what, served.shape, ref.shape)
    close = np.abs(served.astype(np.int16) - ref.astype(np.int16)) <= 1
    assert close.mean() >= 0.999, f"{what}: only {close.mean():.5f} of values within 1 level of the reference"


SIZES = [  # (width, height, format) of the person / on-model image
    (333, 250, "JPEG"), (768, 1024, "PNG"), (1500, 2000, "JPEG"), (192, 256, "PNG"), (4000, 90, "JPEG"),
]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("width, height, fmt", SIZES, ids=[f"{f.lower()}{w}x{h}" for w, h, f in SIZES])
def test_served_ensembles_match_the_in_process_reference(real_server, reference, protocol, width, height, fmt):
    person = _render(width, height, fmt)
    garment = _render(300, 400, "JPEG", seed=23)
    served = _infer(real_server, protocol, contract.TRYON, [person, garment])["tryon_image"][0]
    assert served.shape == (height, width, 3)
    _assert_matches(served, reference.tryon(person, garment), "tryon_image")
    out = _infer(real_server, protocol, contract.RECOLOR, [person, STILL])
    ref_rgb, ref_mask = reference.recolor(person, STILL)
    _assert_matches(out["recolored_image"][0], ref_rgb, "recolored_image")
    _assert_matches(out["garment_mask"][0], ref_mask, "garment_mask")


UNUSUAL = {
    "1x1-png": lambda: _render(1, 1, "PNG"),
    "4096x4096-jpeg": lambda: _render(4096, 4096, "JPEG", quality=90),
    "16bit-gray-png": lambda: _render(200, 300, "PNG", mode="I;16"),
    "16bit-rgb-png": lambda: _rgb48_png(210, 280),
    "cmyk-jpeg": lambda: _render(240, 320, "JPEG", mode="CMYK", quality=92),
    "grayscale-jpeg": lambda: _render(180, 240, "JPEG", mode="L"),
    "grayscale-png": lambda: _render(181, 241, "PNG", mode="L"),
    "rgba-png": lambda: _render(300, 200, "PNG", mode="RGBA"),
}


@pytest.mark.parametrize("kind", list(UNUSUAL))
def test_unusual_images_come_back_at_their_size_and_match_the_reference(real_server, reference, kind):
    """1x1, 4096x4096, 16-bit, CMYK, grayscale and RGBA: each as person and as garment, over gRPC."""
    data = UNUSUAL[kind]()
    size = Image.open(io.BytesIO(data)).size  # (w, h); none of these carry an EXIF rotation
    served = _infer(real_server, "grpc", contract.TRYON, [data, STILL])["tryon_image"][0]
    assert served.shape == (size[1], size[0], 3)
    _assert_matches(served, reference.tryon(data, STILL), f"{kind} tryon_image")
    out = _infer(real_server, "grpc", contract.RECOLOR, [JPEG_333x250, data])  # as the still
    assert out["recolored_image"].shape == (1, 250, 333, 3) and out["garment_mask"].shape == (1, 250, 333)
    _assert_matches(out["recolored_image"][0], reference.recolor(JPEG_333x250, data)[0], f"{kind} as still")


@pytest.mark.parametrize("spec, bad, data, fragment", [
    (contract.TRYON, "person_image", lambda: _render(4097, 3, "PNG"), "over the 4096 pixel limit"),
    (contract.RECOLOR, "still_image", lambda: _render(64, 64, "PNG")[:-20], "truncated PNG"),
    (contract.TRYON, "garment_image", lambda: _render(64, 64, "PNG", mode="RGB").replace(b"PNG", b"GIF", 1), "not a JPEG or PNG"),
], ids=["4097-side", "truncated-png", "wrong-magic"])
def test_out_of_contract_images_are_invalid_argument(real_server, spec, bad, data, fragment):
    payload = [data() if n == bad else JPEG_333x250 for n in spec.input_names]
    with pytest.raises(InferenceServerException) as info:
        _infer(real_server, "grpc", spec, payload)
    assert str(info.value.status()) == "StatusCode.INVALID_ARGUMENT"
    assert f"{bad}: " in info.value.message() and fragment in info.value.message(), info.value.message()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_model_repository_api_refused_without_the_admin_key(real_server, protocol):
    client = _client(real_server, protocol)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_model_repository_index()
    index = client.get_model_repository_index(headers=real_server.admin_headers(protocol))
    names = {m["name"] for m in index} if protocol == "http" else {m.name for m in index.models}
    assert {"tryon", "recolor", "human_parsing", "garment_seg", "gmm", "tom", "recolor_net"} <= names


# ------------------------------------------- evaluate --served-by: the test split through the served ensembles


def test_evaluate_scores_the_served_ensembles_on_the_test_split(real_server, reference, tmp_path):
    """`evaluate --served-by URL` sends every test item to the server's tryon / recolor ensembles and scores what
    comes back against the same targets as the networks' rows (`*_ensemble`): the numbers equal the in-process
    reference pipeline's on the same 8-bit images, and a server that is not there is refused by name."""
    import torch

    from conftest import CHECKPOINTS, ROOT
    from drape_client.images import encode   # what the client sends for an array: lossless PNG
    from drape_train.datasets import NetworkDataset
    from drape_train.evaluate import _f, _u8
    from drape_train.evaluate import main as evaluate
    from drape_train.objectives import delta_e2000, tryon_ssim

    data = ROOT / "build" / "quick" / "data"
    report = tmp_path / "report.json"
    rc = evaluate(["--networks", "tom", "recolor", "--checkpoints", str(CHECKPOINTS), "--data", str(data),
                   "--split", "test", "--served-by", real_server.grpc_url, "--out", str(report)])
    tom, rec = json.loads(report.read_text())
    assert rc in (0, 1) and tom["network"] == "tom" and rec["network"] == "recolor"

    ssim, changed = [], []
    for item in NetworkDataset(str(data), "test", "tom", seed=12345):
        person, garment = encode(_u8(item["person"]), "person_image"), encode(_u8(item["garment"]), "garment_image")
        out = _f(reference.tryon(person, garment))[None]
        s = tryon_ssim(out, item["target"][None], item["person"][None])
        ssim.append(float(s["ssim"])), changed.append(float(s["ssim_changed"]))
    assert len(ssim) == tom["n"]
    assert tom["model"]["ssim_ensemble"] == pytest.approx(np.mean(ssim), abs=2e-3)
    assert tom["model"]["ssim_changed_ensemble"] == pytest.approx(np.mean(changed), abs=5e-3)
    assert 0.0 < tom["model"]["ssim_kept_ensemble"] <= 1.0 and tom["model"]["psnr_ensemble"] > 10.0

    de = []
    for item in NetworkDataset(str(data), "test", "recolor", seed=12345):
        photo, still = encode(_u8(item["on_model"]), "on_model_image"), encode(_u8(item["still"]), "still_image")
        out = _f(reference.recolor(photo, still)[0])[None]
        de.append(delta_e2000(out, item["target"][None])[0, 0][item["garment_mask"][0] > 0.5])
    assert rec["model"]["delta_e2000_ensemble"] == pytest.approx(float(torch.cat(de).double().mean()), rel=0.02)
    assert rec["model"]["delta_e2000_ensemble"] != pytest.approx(rec["model"]["delta_e2000"], rel=1e-3)

    with pytest.raises(SystemExit):   # argparse error: "--served-by 127.0.0.1:9: the server is not ready"
        evaluate(["--networks", "tom", "--checkpoints", str(CHECKPOINTS), "--data", str(data),
                  "--served-by", "127.0.0.1:9", "--out", str(tmp_path / "x.json")])
