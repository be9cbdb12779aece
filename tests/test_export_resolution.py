"""Serving at another resolution, the documented way: data -> train --height/--width -> export -> repo -> serve.

The resolution is chosen where the networks are trained (the GMM's TPS grid and the recolor attention are
built for one H x W) and travels in the model cards; export and assembly read it from there. This runs the
whole chain at 512x384 with one training step per network (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drape_core import contract

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [str(ROOT / "training" / "configs" / f"{n}.yaml") for n in ("garment_seg", "human_parsing", "gmm", "tom", "recolor")]


@pytest.mark.slow
@pytest.mark.server
def test_512x384_trained_exported_assembled_and_served(tmp_path):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from drape_export.repository import assemble
    from drape_serving.reference import ReferencePipeline
    from drape_serving.server import start_server
    from drape_train.data.layout import write_dataset

    hw = (512, 384)
    data = tmp_path / "data"
    write_dataset(data, {"train": 4, "val": 2, "test": 2}, seed=5, height=hw[0], width=hw[1], workers=1, progress=False)
    ckpt = tmp_path / "ckpt"
    launcher = Path(sys.executable).parent / "deepspeed"
    from drape_serving.server import free_port

    cmd = [str(launcher), "--num_gpus", "1", "--master_port", str(free_port()), str(ROOT / "training/drape_train/train.py"), "--quick", "--steps", "1",
           "--height", str(hw[0]), "--width", str(hw[1]), "--config", *CONFIGS, "--data", str(data), "--out", str(ckpt)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    onnx_dir = tmp_path / "onnx"
    export = subprocess.run([sys.executable, "-m", "drape_export", "onnx", "--checkpoints", str(ckpt), "--out",
                             str(onnx_dir)], capture_output=True, text=True, timeout=900)
    assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
    report = assemble(onnx_dir, tmp_path / "repo", height=hw[0], width=hw[1])
    assert report.resolution == hw and sorted(report.ensembles) == ["recolor", "tryon"]
    assert "dims: [ 3, 512, 384 ]" in (tmp_path / "repo" / "tryon_preprocess" / "config.pbtxt").read_text()

    buf = io.BytesIO()
    Image.fromarray(np.asarray(Image.open(next((data / "test" / "image").iterdir())))).resize((600, 800)).save(buf, "JPEG")
    person = buf.getvalue()
    garment = (next((data / "test" / "cloth").iterdir())).read_bytes()
    reference = ReferencePipeline(tmp_path / "repo")
    with start_server(tmp_path / "repo", log_file=tmp_path / "tritonserver.log", ready_timeout=240) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for spec in (contract.TRYON, contract.RECOLOR):
            inputs = []
            for name, payload in zip(spec.input_names, (person, garment)):
                arr = np.frombuffer(payload, np.uint8)[None]
                tensor = grpcclient.InferInput(name, list(arr.shape), "UINT8")
                tensor.set_data_from_numpy(arr)
                inputs.append(tensor)
            result = client.infer(spec.name, inputs)
            served = result.as_numpy(spec.output_names[0])[0]
            assert served.shape == (800, 600, 3)
            expected = reference.tryon(person, garment) if spec is contract.TRYON else reference.recolor(person, garment)[0]
            close = np.abs(served.astype(int) - expected.astype(int)) <= 1
            assert close.mean() >= 0.999, f"{spec.name}: {close.mean():.5f}"
