"""ONNX -> TensorRT: everything up to the builder call runs here on CPU; the build itself is a `gpu` test.

On CPU: the typed build config, the optimization profiles from the real cards, the choice and I/O check of the
FP16 graph, the validation harness (driven by ONNX Runtime running the FP16 graph, the same comparison the
engine gets), the card record and the refusal of mismatched plans, and the CLI up to the point where it needs
TensorRT. On a GPU machine with the `tensorrt` extra: a real strongly-typed FP16 build, validated, recorded,
assembled into a GPU repository and accepted by the pre-start plan check.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from conftest import ONNX_DIR
from drape_export.onnx_export import FP16_FILE, ONNX_FILE, RealSamples, ort_run, ort_session
from drape_export.tensorrt_build import (
    PLAN_FILE,
    Tolerance,
    TrtBuildConfig,
    TrtError,
    batch_of,
    plan_build,
    profile_shapes,
    tensorrt_record,
    validate,
)
from drape_serving.plan_check import PlanMismatchError, Runtime, check_card, trt_release


def _net_dir(name: str):
    path = ONNX_DIR / name
    if not (path / "card.json").is_file():
        pytest.fail(f"{path} is missing: run `make quick` (make test does it first)")
    return path


def test_default_config_file_and_overrides():
    cfg = TrtBuildConfig.load()
    assert (cfg.precision, cfg.min_batch, cfg.opt_batch, cfg.max_batch) == ("fp16", 1, 4, 8)
    assert cfg.onnx_file == FP16_FILE and cfg.validation_batches == (1, 4, 8)
    assert str(cfg.timing_cache).endswith("timing.cache")
    cfg = TrtBuildConfig.load(precision="fp32", opt_batch=8, min_batch=None)
    assert cfg.onnx_file == ONNX_FILE and cfg.validation_batches == (1, 8) and cfg.tolerance == cfg.tolerance_fp32


def test_config_is_validated(tmp_path):
    with pytest.raises(ValidationError, match="min_batch <= opt_batch <= max_batch"):
        TrtBuildConfig(min_batch=4, opt_batch=2, max_batch=8)
    with pytest.raises(ValidationError, match="extra"):
        TrtBuildConfig.model_validate({"fp16": True})  # weak-typing flags do not exist here
    with pytest.raises(ValidationError):
        TrtBuildConfig(builder_optimization_level=9)
    bad = tmp_path / "trt.yaml"
    bad.write_text("precision: int8\n")
    with pytest.raises(ValidationError, match="precision"):
        TrtBuildConfig.load(bad)
    with pytest.raises(TrtError, match="cannot read"):
        TrtBuildConfig.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["gmm", "recolor"])
def test_profiles_cover_every_input_at_min_opt_max_batch(name):
    card = json.loads((_net_dir(name) / "card.json").read_text())
    shapes = profile_shapes(card, TrtBuildConfig(min_batch=1, opt_batch=4, max_batch=8))
    assert list(shapes) == [s["name"] for s in card["inputs"]]
    for spec in card["inputs"]:
        lo, opt, hi = shapes[spec["name"]]
        assert (lo[0], opt[0], hi[0]) == (1, 4, 8)
        assert list(lo[1:]) == list(opt[1:]) == list(hi[1:]) == spec["shape"]
    with pytest.raises(TrtError, match="below the card's max_batch_size 8"):
        profile_shapes(card, TrtBuildConfig(min_batch=1, opt_batch=2, max_batch=4))


def test_plan_build_picks_the_fp16_graph_and_checks_its_io(tmp_path):
    plan = plan_build(_net_dir("gmm"), TrtBuildConfig())
    assert plan.onnx_path.name == FP16_FILE and plan.plan_path.name == PLAN_FILE and plan.name == "gmm"
    assert plan_build(_net_dir("gmm"), TrtBuildConfig(precision="fp32")).onnx_path.name == ONNX_FILE

    # a graph converted without keeping FP32 I/O would change the Triton config: refused
    from onnxruntime.transformers.float16 import convert_float_to_float16

    d = tmp_path / "gmm"
    d.mkdir()
    shutil.copy(_net_dir("gmm") / "card.json", d / "card.json")
    half_io = convert_float_to_float16(onnx.load(str(_net_dir("gmm") / ONNX_FILE)), keep_io_types=False)
    onnx.save(half_io, str(d / FP16_FILE))
    with pytest.raises(TrtError, match="not FP32"):
        plan_build(d, TrtBuildConfig())
    (d / FP16_FILE).unlink()
    with pytest.raises(TrtError, match="drape_export onnx"):
        plan_build(d, TrtBuildConfig())


def test_validation_harness_accepts_fp16_and_names_the_failing_batch(tmp_path):
    """The harness the engine goes through, driven here by ORT running the FP16 graph (a real FP16 candidate)."""
    d = _net_dir("gmm")
    card = json.loads((d / "card.json").read_text())
    res = card["resolution"]
    samples = RealSamples(tmp_path, res["height"], res["width"], n=2).inputs(card)
    fp16 = ort_session(d / FP16_FILE)
    candidate = lambda xs: ort_run(fp16, card, xs)  # noqa: E731
    cfg = TrtBuildConfig()
    stats = validate(candidate, d / ONNX_FILE, card, samples, cfg.validation_batches, cfg.tolerance)
    assert set(stats) == {"1", "4", "8"}
    assert all(0 < s["mean_abs"] <= 1e-2 and s["p999_abs"] <= 0.1 for s in stats.values()), stats
    with pytest.raises(TrtError, match=r"gmm: at batch 1 .*allowed mean 1e-09"):
        validate(candidate, d / ONNX_FILE, card, samples, (1, 8), Tolerance(mean_abs=1e-9, p999_abs=1e-9))


def test_batch_of_tiles_samples():
    xs = [np.arange(3)[:, None] * np.ones((3, 2)), np.arange(3)[:, None]]
    out = batch_of(xs, 8)
    assert [len(x) for x in out] == [8, 8] and out[1][:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_card_record_round_trips_through_the_plan_check(tmp_path):
    plan = plan_build(_net_dir("tom"), TrtBuildConfig())
    record = tensorrt_record("10.3.0.26", "9.0", "NVIDIA H100 80GB HBM3", TrtBuildConfig(), plan, b"engine",
                             {"1": {"max_abs": 0.01, "mean_abs": 0.001, "p999_abs": 0.005}}, 12.3)
    assert record["plan_sha256"] and record["profile"] == {"min_batch": 1, "opt_batch": 4, "max_batch": 8}
    card = plan.card.with_section("tensorrt", record)
    assert check_card(card, Runtime("10.3.0.1", "9.0", "NVIDIA H100 80GB HBM3"), "tom") == []
    with pytest.raises(PlanMismatchError, match="tom: .*TensorRT 10.3.0.26, the runtime has 11.0.0"):
        check_card(card, Runtime("11.0.0", "9.0"), "tom")
    with pytest.raises(PlanMismatchError, match="compute capability 9.0 .*the runtime GPU is 8.9"):
        check_card(card, Runtime("10.3.0", "8.9", "NVIDIA L4"), "tom")
    notes = check_card(card, Runtime("10.3.0", "9.0", "NVIDIA H100 NVL"), "tom")
    assert len(notes) == 1 and "same architecture" in notes[0]
    assert len(check_card(card, Runtime(None, None), "tom")) == 2
    with pytest.raises(PlanMismatchError, match="no 'tensorrt' record"):
        check_card(plan.card, Runtime("10.3.0", "9.0"), "tom")
    assert trt_release("10.3.0.26") == "10.3.0" and trt_release("11.0") == "11.0.0"
    with pytest.raises(ValueError):
        trt_release("ten")


def test_cli_dry_run_and_the_clear_refusal_without_tensorrt(capsys, tmp_path):
    from drape_export.__main__ import main

    assert main(["trt", "--dry-run", "--onnx-dir", str(ONNX_DIR)]) == 0
    out = capsys.readouterr().out
    for name in ("garment_seg", "human_parsing", "gmm", "tom", "recolor"):
        assert f"{name}" in out
    assert "model.fp16.onnx ->" in out and "[1, 3, 256, 192]..[8, 3, 256, 192] (opt [4, 3, 256, 192])" in out
    assert main(["trt", "--dry-run", "--onnx-dir", str(ONNX_DIR), "--opt-batch", "9"]) == 2
    assert "min_batch <= opt_batch <= max_batch" in capsys.readouterr().err
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    if not has_trt:  # everything up to the builder call ran; the build itself is refused with the reason
        work = tmp_path / "onnx"
        shutil.copytree(_net_dir("garment_seg"), work / "garment_seg")
        assert main(["trt", "--onnx-dir", str(work)]) == 2
        assert "TensorRT is not installed" in capsys.readouterr().err
        assert not (work / "garment_seg" / PLAN_FILE).exists()


def _gpu_or_skip():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU machines: pip install -e '.[tensorrt]')")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible: TensorRT plans are built and validated on the serving GPU")
    return trt


@pytest.mark.gpu
def test_tensorrt_fp16_build_validates_records_and_serves_the_check(tmp_path):
    trt = _gpu_or_skip()
    from drape_export.__main__ import main
    from drape_export.repository import assemble
    from drape_serving.plan_check import check_repository, detect_runtime

    work = tmp_path / "onnx"
    shutil.copytree(ONNX_DIR, work, ignore=shutil.ignore_patterns(PLAN_FILE))
    cache = tmp_path / "timing.cache"
    assert main(["trt", "--onnx-dir", str(work), "--timing-cache", str(cache)]) == 0
    card = json.loads((work / "garment_seg" / "card.json").read_text())
    record = card["tensorrt"]
    assert record["version"] == trt.__version__ and record["precision"] == "fp16" and record["strongly_typed"]
    assert set(record["validation_vs_ort_fp32"]) == {"1", "4", "8"}
    assert cache.is_file() and cache.stat().st_size > 0
    size = cache.stat().st_size
    assert main(["trt", "--onnx-dir", str(work), "--networks", "garment_seg", "--timing-cache", str(cache)]) == 0
    assert cache.stat().st_size >= size  # reused and re-saved
    runtime = detect_runtime()
    report = assemble(work, tmp_path / "gpu", target="gpu", plan_runtime=runtime)
    assert report.missing_plans == [] and sorted(report.ensembles) == ["recolor", "tryon"]
    assert (tmp_path / "gpu" / "garment_seg" / "1" / PLAN_FILE).is_file()
    check_repository(tmp_path / "gpu", runtime)
