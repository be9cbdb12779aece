"""drape-client CLI on the real server: single pairs, resumable folder batches, failure summaries, exit codes."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drape_client.__main__ import main
from drape_client.batch import pairs_from_file, pairs_from_folders, write_image_atomic

pytestmark = pytest.mark.server


def _studio(seed: int, hw=(240, 180)):
    from drape_train.data.synth import render_pair

    return render_pair(seed, *hw)


def _save(rgb: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """persons/ and garments/ with 3 matching stems, one unreadable garment and one person without a partner."""
    root = tmp_path_factory.mktemp("cli")
    for i in range(3):
        a, b = _studio(i)
        _save(a.image, root / "persons" / f"p{i}.jpg")
        _save(b.cloth, root / "garments" / f"p{i}.png")
    a, _ = _studio(9)
    _save(a.image, root / "persons" / "p3.jpg")
    (root / "garments" / "p3.jpg").write_bytes(b"not an image at all")
    _save(a.image, root / "persons" / "lonely.jpg")
    return root


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drape_client", *args], capture_output=True, text=True, timeout=300)


def test_help_for_every_command():
    for args in ([], ["tryon"], ["recolor"], ["ready"], ["info"]):
        res = _cli(*args, "--help")
        assert res.returncode == 0 and "usage: drape-client" in res.stdout, res.stderr
    script = Path(sys.executable).with_name("drape-client")
    assert subprocess.run([str(script), "--help"], capture_output=True).returncode == 0


def test_single_pair_and_its_errors(real_server, folders, tmp_path):
    out = tmp_path / "tryon.png"
    res = _cli("--url", real_server.grpc_url, "tryon", "--person", str(folders / "persons/p0.jpg"),
               "--garment", str(folders / "garments/p0.png"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert Image.open(out).size == (180, 240)
    res = _cli("--url", f"http://{real_server.http_url}", "recolor", "--on-model", str(folders / "persons/p1.jpg"),
               "--still", str(folders / "garments/p3.jpg"), "--out", str(tmp_path / "r.png"))
    assert res.returncode == 1 and "still_image" in res.stderr and "garments/p3.jpg" in res.stderr
    assert not (tmp_path / "r.png").exists()


def test_usage_errors_exit_2(folders, tmp_path):
    for args in (["tryon", "--person", "a.jpg", "--out-dir", str(tmp_path)],          # single and batch mixed
                 ["tryon", "--person", "a.jpg", "--out", "x.png"],                      # single pair incomplete
                 ["recolor", "--on-model-dir", str(folders / "persons"), "--out-dir", str(tmp_path)],
                 ["--url", "ftp://x:1", "ready"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2


def test_folder_batch_is_resumable_and_reports_failures(real_server, folders, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--url", real_server.grpc_url, "tryon", "--person-dir", str(folders / "persons"),
            "--garment-dir", str(folders / "garments"), "--out-dir", str(out), "--concurrency", "2"]
    assert main(args) == 1                                   # p3's garment is not an image
    err = capsys.readouterr().err
    assert "3 written, 0 already done (skipped), 1 failed, 1 unmatched" in err
    assert "garment_image" in err and "BadInputError" in err and "lonely.jpg" in err
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p2.png"]   # no temporary files left
    for i in range(3):
        assert Image.open(out / f"p{i}.png").size == (180, 240)
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}

    # A crash mid-write leaves only a temporary file: the pair is not counted as done.
    (out / ".p3.png.tmp-999-1").write_bytes(b"half")
    _, b = _studio(3)
    _save(b.cloth, folders / "garments" / "p3.jpg")          # fix the bad input
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 written, 3 already done (skipped), 0 failed" in err
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())   # finished outputs untouched
    assert Image.open(out / "p3.png").size == (180, 240)


def test_pairs_file_batch_with_masks_over_http(real_server, folders, tmp_path, capsys):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# on-model still [name]\np0.jpg p1.png\np1.jpg p0.png custom_name\n\n")
    out = tmp_path / "out"
    args = ["--url", f"http://{real_server.http_url}", "recolor", "--pairs", str(pairs),
            "--on-model-dir", str(folders / "persons"), "--still-dir", str(folders / "garments"),
            "--out-dir", str(out), "--masks", "--format", "jpg"]
    assert main(args) == 0
    assert "2 written" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["custom_name.jpg", "custom_name_mask.png", "p0__p1.jpg",
                                                     "p0__p1_mask.png"]
    mask = np.asarray(Image.open(out / "p0__p1_mask.png"))
    assert mask.shape == (240, 180) and set(np.unique(mask)) <= {0, 255}


def test_ready_and_info(real_server, capsys):
    assert main(["--url", real_server.grpc_url, "ready"]) == 0
    assert main(["--url", f"http://{real_server.http_url}", "info"]) == 0
    out = capsys.readouterr().out
    for model in ("tryon", "recolor", "gmm", "recolor_net", "tryon_postprocess"):
        assert f"  {model} " in out
    assert "NOT READY" not in out
    from drape_serving.server import free_port

    assert main(["--url", f"127.0.0.1:{free_port()}", "--retries", "0", "ready"]) == 1


def test_pair_discovery(folders, tmp_path):
    pairs, unmatched = pairs_from_folders(folders / "persons", folders / "garments")
    assert [p.name for p in pairs] == ["p0", "p1", "p2", "p3"] and [u.name for u in unmatched] == ["lonely.jpg"]
    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg b.jpg\na.jpg b.jpg\n")
    with pytest.raises(ValueError, match="repeats line 1"):
        pairs_from_file(bad)
    bad.write_text("only_one_column.jpg\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        pairs_from_file(bad)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(OSError):
        write_image_atomic(rgba, tmp_path / "x.jpg")          # JPEG cannot hold alpha: fails while encoding
    assert list(tmp_path.iterdir()) == []
    write_image_atomic(rgba[:, :, :3], tmp_path / "x.jpg")
    assert [p.name for p in tmp_path.iterdir()] == ["x.jpg"]
    assert Image.open(io.BytesIO((tmp_path / "x.jpg").read_bytes())).size == (4, 4)
