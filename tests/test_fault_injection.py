"""Files damaged every way a disk, a copy or a killed process damages them, values out of
range, odd images and text files: each gives one clear line and, where something was
computed from the file, a recomputation that gives the same numbers; never a traceback."""

import io
import logging
import os
import shutil
import subprocess
import time
import tomllib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from lmbench.config.matrix import load_matrix, parse_matrix
from lmbench.core.errors import DataError, LmbenchError, MatrixError
from lmbench.data.io import read_image, read_text_file
from lmbench.detector.saved import load_detector, model_file, predict_folder
from lmbench.run.schedule import run_matrix
from lmbench.store import integrity, results
from lmbench_plugins.xray.folder import read_landmark_csv

from conftest import lmbench_cli, tiny_matrix


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-run matrix that keeps its detectors; each test damages a copy."""
    folder = tmp_path_factory.mktemp("finished")
    matrix = load_matrix(tiny_matrix(folder, extra="save_models = true"))
    assert run_matrix(matrix, quiet=True).ok == 2
    return folder


def copy_of(finished, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for part in ("results", "cache"):
        shutil.copytree(finished / part, folder / part)
    return load_matrix(tiny_matrix(folder, extra="save_models = true"))


def values(results_dir):
    """run_key -> every metric value of that run, read back verified."""
    return {row["run_key"]: sorted(results.read_table("metrics", row["_file"]).column("value").to_pylist())
            for row in results.read_runs([results_dir])}


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path):
    path.write_bytes(b"")


def flip_a_bit_plain_parquet_misses(path):
    """Flip the first bit (from the middle of the file on) that a reader without checksums
    reads back silently as other values: the damage that used to go unnoticed."""
    data = path.read_bytes()
    original = pq.read_table(io.BytesIO(data))
    for bit in range(len(data) * 4, len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        try:
            if not pq.read_table(io.BytesIO(bytes(damaged))).equals(original):
                path.write_bytes(bytes(damaged))
                return
        except (OSError, pa.ArrowException):
            continue
    raise AssertionError(f"no silent flip found in {path}")


DAMAGES = {"truncated": truncate, "empty": empty, "bit-flipped": flip_a_bit_plain_parquet_misses}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("kind", ["runs", *results.COMPANIONS])
def test_a_damaged_results_file_is_set_aside_and_its_run_recomputed(finished, tmp_path, kind, damage, caplog):
    matrix = copy_of(finished, tmp_path)
    before = values(matrix.results_dir)
    key = sorted(before)[0]
    path = matrix.results_dir / kind / f"{key}.parquet"
    DAMAGES[damage](path)
    with caplog.at_level(logging.WARNING, logger="lmbench"):
        shown = results.read_runs([matrix.results_dir])  # what status, leaderboard and report show
    assert [r["run_key"] for r in shown] == [k for k in sorted(before) if k != key]  # the rest
    (line,) = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert f"run {key} is pending again" in line and "\n" not in line
    assert list((matrix.results_dir / integrity.CORRUPT / kind).glob(f"{key}.parquet.*"))  # moved, not deleted
    summary = run_matrix(matrix, quiet=True)
    assert (summary.ok, summary.already_done) == (1, 1)
    assert values(matrix.results_dir) == before  # recomputed to the same numbers


def test_status_leaderboard_and_report_show_the_rest_and_run_redoes_the_damaged(finished, tmp_path):
    matrix = copy_of(finished, tmp_path)
    key = sorted(values(matrix.results_dir))[0]
    truncate(matrix.results_dir / "metrics" / f"{key}.parquet")
    toml = str(matrix.path)
    status = lmbench_cli("status", "--matrix", toml)
    assert status.returncode == 0 and "1 finished" in status.stdout and "1 pending" in status.stdout, status
    assert "Traceback" not in status.stderr and status.stderr.count("\n") == 1, status.stderr
    assert f"metrics/{key}.parquet: unreadable" in status.stderr
    board = lmbench_cli("leaderboard", str(matrix.results_dir), "--format", "csv")
    assert board.returncode == 0 and board.stdout.count("\n") == 2, board  # header and the one intact run
    report = lmbench_cli("report", str(matrix.results_dir), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stdout + report.stderr
    again = lmbench_cli("run", "--matrix", toml, "--quiet")
    assert again.returncode == 0 and "1 ok" in again.stdout and "1 already done" in again.stdout, again.stdout


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_data_cache_is_named_set_aside_and_decoded_again(finished, tmp_path, damage, caplog):
    matrix = copy_of(finished, tmp_path)
    before = values(matrix.results_dir)
    (path,) = (matrix.cache_dir / "data").glob("*.safetensors")
    if damage == "bit-flipped":  # inside the tensors, which only the checksum can catch
        data = bytearray(path.read_bytes())
        data[-100] ^= 0x10
        path.write_bytes(bytes(data))
    else:
        DAMAGES[damage](path)
    with caplog.at_level(logging.WARNING, logger="lmbench"):
        assert run_matrix(matrix, rerun="all", quiet=True).ok == 2
    assert any(str(path) in r.getMessage() and "decoding the dataset again" in r.getMessage() for r in caplog.records)
    assert list((matrix.cache_dir / integrity.CORRUPT / "data").iterdir())
    assert values(matrix.results_dir) == before


def test_a_damaged_detector_is_refused_in_one_line_and_its_run_trained_again(finished, tmp_path):
    matrix = copy_of(finished, tmp_path)
    run = results.read_runs([matrix.results_dir])[0]
    truncate(model_file(run))
    with pytest.raises(LmbenchError, match=rf"not a safetensors file.*set aside.*trains run {run['run_key']} again"):
        load_detector(run)
    assert run_matrix(matrix, quiet=True).ok == 1
    (again,) = [r for r in results.read_runs([matrix.results_dir]) if r["run_key"] == run["run_key"]]
    load_detector(again)


def test_bit_flips_anywhere_in_a_results_file_are_caught_or_change_nothing(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"split": s, "eval_mode": "native", "metric": m, "landmark": str(i), "value": float(rng.uniform(0, 9)),
             "unit": "mm"} for s in ("val", "test") for m in ("mre", "sdr@2") for i in range(20)]
    path = tmp_path / "metrics" / "k.parquet"
    results.write_atomic(results._table("metrics", [{"run_key": "k", **r} for r in rows]), path)
    data = path.read_bytes()
    original = results.read_verified(path, results.METRIC_SCHEMA)
    caught = silent = 0
    for bit in rng.choice(len(data) * 8, 1500, replace=False):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        try:
            silent += not results.read_verified(path, results.METRIC_SCHEMA).equals(original)
        except LmbenchError:
            caught += 1
    assert silent == 0 and caught > 1000


def test_what_killed_writers_left_is_removed_at_the_next_run(finished, tmp_path, caplog):
    matrix = copy_of(finished, tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    old = time.time() - 3600
    leftovers = [matrix.results_dir / "runs" / f".x.parquet.{dead.pid}.tmp",
                 matrix.cache_dir / "data" / f".d.safetensors.{dead.pid}.tmp",
                 matrix.results_dir / "models" / "0123456789abcdef.safetensors"]  # saved, its run row never written
    stopped = matrix.cache_dir / "pretrain" / "feedface"  # killed before its first resume state
    (stopped / "checkpoint-10.safetensors").parent.mkdir(parents=True)
    (stopped.parent / "feedface.lock").touch()
    leftovers.append(stopped / "checkpoint-10.safetensors")
    fresh = matrix.results_dir / "runs" / f".y.parquet.{os.getpid()}.tmp"  # a writer still at work
    for path in [*leftovers, fresh]:
        path.write_bytes(b"partial")
    for path in leftovers:
        os.utime(path, (old, old))
    with caplog.at_level(logging.WARNING, logger="lmbench"):
        assert run_matrix(matrix, quiet=True).already_done == 2
    assert not any(p.exists() for p in leftovers) and fresh.exists()
    assert any("removed 1 detectors without a run row" in r.getMessage() for r in caplog.records)


BAD_VALUES = [
    (("finetune", "epochs"), -3, "finetune.epochs: must be at least 1 and at most 100000, got -3"),
    (("finetune", "batch_size"), 0, "finetune.batch_size: must be at least 1, got 0"),
    (("finetune", "augment_probability"), 1.5, "finetune.augment_probability: must be at least 0 and at most 1, got 1.5"),
    (("image_size",), 0, "image_size: must be at least 32 and at most 4096, got 0"),
    (("seeds",), [-1], "seeds[0]: must be at least 0, got -1"),
    (("health", "probe_images"), 0, "health.probe_images: must be at least 1, got 0"),
    (("executor",), {"kind": "pool", "workers": -2}, "executor.params.workers: must be at least 0, got -2"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES)
def test_an_out_of_range_value_is_refused_naming_the_file_key_and_range(tmp_path, key, value, message):
    data = tomllib.loads(tiny_matrix(tmp_path).read_text())
    table = data
    for part in key[:-1]:
        table = table.setdefault(part, {})
    table[key[-1]] = value
    with pytest.raises(MatrixError) as refused:
        parse_matrix(data, tmp_path / "bad.toml")
    assert str(refused.value) == f"{tmp_path / 'bad.toml'}.{message}"


def test_a_plugin_param_out_of_range_is_refused_by_validate_in_one_line(tmp_path):
    path = tiny_matrix(tmp_path)
    path.write_text(path.read_text().replace("n_train = 12", "n_train = -5"))
    shown = lmbench_cli("validate", "--matrix", str(path))
    assert shown.returncode == 2 and shown.stdout.count("\n") == 1, shown.stdout + shown.stderr
    assert shown.stdout == f"error: {path}.datasets[0].params.n_train: must be at least 1, got -5\n"


GRAY = (np.arange(48 * 40).reshape(48, 40) * 7 % 256).astype(np.uint8)


@pytest.mark.parametrize(("name", "image"), [
    ("gray.png", Image.fromarray(GRAY)),
    ("cmyk.tif", Image.fromarray(GRAY).convert("CMYK")),
    ("palette.png", Image.fromarray(GRAY).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256)),
    ("opaque-alpha.png", Image.fromarray(GRAY).convert("LA")),
    ("16-bit.png", Image.fromarray(GRAY.astype(np.uint16) * 257)),
    ("32-bit.tif", Image.fromarray(GRAY.astype(np.int32) * 257)),
])
def test_every_image_mode_reads_as_the_same_gray_picture(tmp_path, name, image):
    image.save(tmp_path / name)
    pixels = read_image(tmp_path / name)
    assert pixels.shape == GRAY.shape
    assert np.corrcoef(pixels.ravel(), GRAY.ravel())[0, 1] > 0.99  # the picture, not zeros or noise


def test_images_that_cannot_be_read_faithfully_are_refused_in_one_line(tmp_path, monkeypatch):
    transparent = Image.fromarray(GRAY).convert("RGBA")
    transparent.putalpha(Image.fromarray((GRAY > 100).astype(np.uint8) * 255))
    transparent.save(tmp_path / "transparent.png")
    with pytest.raises(DataError, match=r"transparent.png: image has transparent pixels \(mode RGBA\)"):
        read_image(tmp_path / "transparent.png")
    frames = [Image.fromarray(GRAY), Image.fromarray(GRAY[::-1].copy())]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match=r"stack.tif: image holds 2 frames"):
        read_image(tmp_path / "stack.tif")
    Image.fromarray(GRAY).save(tmp_path / "large.png")
    monkeypatch.setenv("LMBENCH_MAX_PIXELS", "1000")
    with pytest.raises(DataError, match=r"large.png: 40x48 image is 0 megapixels, over the limit of 0.001; raise it"):
        read_image(tmp_path / "large.png")
    assert read_image(tmp_path / "large.png", limit=2000).shape == GRAY.shape  # the limit lifted


def test_predict_writes_nothing_when_an_image_fails_or_the_others_when_told(finished, tmp_path):
    run = results.read_runs([finished / "results"])[0]
    detector = load_detector(run)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(GRAY, i, axis=0)).save(images / f"{i}.png")
    Image.fromarray(GRAY).convert("CMYK").save(images / "cmyk.jpg")
    (images / "notes.png").write_text("not an image")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"notes.png: unreadable image .*; nothing written"):
        predict_folder(detector, images, out, torch.device("cpu"))
    assert not (out / "predictions.csv").exists() and not list(out.rglob("*.json"))
    table, labelme, skipped = predict_folder(detector, images, out, torch.device("cpu"), skip_unreadable=True)
    assert len(skipped) == 1 and "notes.png" in skipped[0]
    ids = [line.split(",")[0] for line in table.read_text().splitlines()[1:]]
    assert sorted(ids) == ["0", "1", "2", "cmyk"] and len(list(labelme.glob("*.json"))) == 4
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    from lmbench.store import integrity

    written = []

    def disk_fills(path, text):  # the disk is full after two files
        if len(written) == 2:
            raise OSError(28, "No space left on device", str(path))
        written.append(path)
        path.write_text(text)

    (images / "3.png").write_bytes((images / "0.png").read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(integrity, "write_text", disk_fills)
        with pytest.raises(OSError, match="No space left"):
            predict_folder(detector, images, out, torch.device("cpu"), skip_unreadable=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the earlier prediction, whole
    assert sorted(p.name for p in out.iterdir()) == ["labelme", "predictions.csv"]


def test_text_files_are_read_with_their_byte_order_mark_or_refused_naming_the_encoding(tmp_path):
    rows = "000,1,2,3,4\n001,5,6,7,8\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())  # a spreadsheet's UTF-8, no header
    assert sorted(read_landmark_csv(tmp_path / "bom.csv").points) == ["000", "001"]
    (tmp_path / "utf16.csv").write_text(rows, encoding="utf-16")
    assert read_text_file(tmp_path / "utf16.csv") == rows
    (tmp_path / "latin1.csv").write_bytes("id,x\nJosé,1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv: landmark file is not UTF-8 text \(byte 0xe9 at offset 8\)"):
        read_landmark_csv(tmp_path / "latin1.csv")


def test_every_failure_line_reaches_the_console_with_its_run_stage_and_log(tmp_path):
    path = tiny_matrix(tmp_path, labels=(1,))
    text = path.read_text().replace('name = "synthetic"\nparams = { n_train = 12, n_val = 4, n_test = 6, height = 100, width = 80 }',
                                    f'name = "isbi2015"\nparams = {{ root = "{tmp_path / "nowhere"}" }}')
    path.write_text(text)
    shown = lmbench_cli("run", "--matrix", str(path), "--quiet")
    assert shown.returncode == 1
    (key,) = [p.stem for p in (tmp_path / "results" / "tiny" / "runs").glob("*.parquet")]
    log = tmp_path / "results" / "tiny" / "logs" / f"{key}.log"
    assert f"[run {key}, loading; log {log}]" in shown.stdout.replace("\n", ""), shown.stdout
    empty_matrix = tmp_path / "empty.toml"
    empty_matrix.write_text('name = "e"\ndatasets = []\n')
    refused = lmbench_cli("validate", "--matrix", str(empty_matrix))
    assert refused.stdout == f"error: {empty_matrix}: [[datasets]] must list at least one dataset\n"
