"""A researcher's labelme folder as it really is (two annotators, slips in some files), from
``data check`` to a run that leaves the bad samples out, to ``lmbench predict``."""

import csv
import json
import weakref

import numpy as np
import pytest
from PIL import Image

from lmbench.config.matrix import load_matrix
from lmbench.core.errors import DataError
from lmbench.data.check import check_dataset
from lmbench.data.io import read_image, read_image_and_spacing
from lmbench.detector.saved import choose_run, load_detector, predict_folder
from lmbench.reporting.figures import write_report
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench_plugins.synthetic.dataset import SyntheticHands
from lmbench_plugins.xray.folder import FolderDataset

from conftest import lmbench_cli

NAMES = ["l1", "l2", "l3", "l4"]
HEIGHT, WIDTH = 64, 80


def point(label, x, y):
    return {"label": label, "points": [[x, y]], "group_id": None, "shape_type": "point", "flags": {}}


def write_labelme(path, shapes, image_path=None):
    path.write_text(json.dumps({"version": "5.4.1", "shapes": shapes, "imagePath": image_path, "imageData": None}))


def messy_folder(tmp_path, count=16):
    """``count`` generated images, each with a bright blob at every landmark, annotated by two
    annotators who disagree by about a pixel, with these slips:
    003: annotator a names l2 twice and lacks l3 (b is fine); 005: b names an unknown landmark;
    007: a's file is not JSON and b's has a NaN; 009: both put l4 outside the image;
    010: the image is scan_010.png, named by the files' imagePath."""
    rng = np.random.default_rng(0)
    root = tmp_path / "ceph"
    for folder in ("images", "ann_a", "ann_b"):
        (root / folder).mkdir(parents=True)
    truth = {}
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for i in range(1, count + 1):
        sample_id = f"{i:03d}"
        points = np.column_stack([rng.uniform(8, WIDTH - 8, 4), rng.uniform(8, HEIGHT - 8, 4)])
        truth[sample_id] = points
        image = 0.2 + 0.05 * rng.standard_normal((HEIGHT, WIDTH))
        for x, y in points:
            image += 0.6 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8)
        name = "scan_010.png" if sample_id == "010" else f"{sample_id}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / "images" / name)
        for annotator, offset in (("ann_a", -0.5), ("ann_b", 0.5)):
            shapes = [point(n, float(x + offset), float(y)) for n, (x, y) in zip(NAMES, points)]
            write_labelme(root / annotator / f"{sample_id}.json", shapes, f"../images/{name}")
    a, b = root / "ann_a", root / "ann_b"
    shapes = json.loads((a / "003.json").read_text())["shapes"]
    write_labelme(a / "003.json", [shapes[0], shapes[1], shapes[1], shapes[3]])
    shapes = json.loads((b / "005.json").read_text())["shapes"]
    write_labelme(b / "005.json", shapes + [point("lx", 3.0, 4.0)], "../images/005.png")
    (a / "007.json").write_text("{not json")
    shapes = json.loads((b / "007.json").read_text())["shapes"]
    shapes[2]["points"] = [["NaN", 3.0]]
    write_labelme(b / "007.json", shapes)
    for annotator in (a, b):
        shapes = json.loads((annotator / "009.json").read_text())["shapes"]
        shapes[3]["points"] = [[WIDTH + 20.0, 10.0]]
        write_labelme(annotator / "009.json", shapes, "../images/009.png")
    return root, truth


def folder(root, **params):
    return FolderDataset(FolderDataset.Params(root=str(root), labels=["ann_a", "ann_b"], landmarks=NAMES, **params))


def test_data_check_lists_every_slip_and_the_rest_is_used(tmp_path):
    root, truth = messy_folder(tmp_path)
    dataset = folder(root)
    excluded = dataset.excluded()
    assert sorted(excluded) == ["007", "009"]
    assert "007.json: not a labelme file" in excluded["007"] and "'l3' has coordinates (NaN, 3.0)" in excluded["007"]
    assert "landmark(s) 'l4' lie outside the 80x64 image" in excluded["009"]
    problems = "\n".join(dataset.problems())
    assert "003: averaged over 1 of 2 annotators" in problems and "'l2' appear(s) twice" in problems
    assert "'l3' missing" in problems and "005: averaged over 1 of 2" in problems and "'lx' not in params.landmarks" in problems
    every = sum((dataset.split(s) for s in ("train", "val", "test")), [])
    assert sorted(every) == sorted(set(truth) - {"007", "009"})
    report = check_dataset("folder", dataset)
    assert report.usable and len(report.errors) == 2 and all(line.startswith("left out: ") for line in report.errors)
    assert report.agreement.images == 12 and report.agreement.overall == pytest.approx(1.0)  # a and b 1 px apart

    shown = lmbench_cli("data", "check", "--dataset", "folder", "--root", str(root), "-p", 'labels=["ann_a", "ann_b"]',
                        "-p", f"landmarks={json.dumps(NAMES)}")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("left out:") == 2 and "inter-annotator distance (px) over 12 images: 1 overall" in shown.stdout
    # no spacing: pixel thresholds scaled to the 80 px longer side, never millimetre values read as pixels
    assert report.unit == "px" and report.thresholds == (0.4, 0.8, 1.6, 3.2) and report.failure_threshold == 4.0
    assert "metrics in px: SDR at 0.4, 0.8, 1.6, 3.2 px, failure beyond 4 px" in shown.stdout
    stated = folder(root, thresholds=[1.0, 2.0], failure_threshold=6.0)
    assert stated.thresholds == (1.0, 2.0) and stated.failure_threshold == 6.0
    assert folder(root, spacing=0.1).thresholds == (2.0, 2.5, 3.0, 4.0) and folder(root, spacing=0.1).failure_threshold == 10


def test_annotators_average_or_one_is_picked(tmp_path):
    root, truth = messy_folder(tmp_path)
    np.testing.assert_allclose(folder(root).load("001").landmarks, truth["001"], atol=1e-9)  # -0.5 and +0.5
    np.testing.assert_allclose(folder(root).load("003").landmarks, truth["003"] + [0.5, 0], atol=1e-9)  # b alone
    only_a = folder(root, annotator="ann_a")
    np.testing.assert_allclose(only_a.load("001").landmarks, truth["001"] - [0.5, 0], atol=1e-9)
    assert sorted(only_a.excluded()) == ["003", "007", "009"]
    assert only_a.annotations("001").keys() == {"ann_a", "ann_b"}
    assert folder(root).load("010").image.shape == (HEIGHT, WIDTH)  # found through imagePath
    with pytest.raises(DataError, match=r"2 sample\(s\) with bad annotations or images, first .*007.json") as error:
        folder(root, on_problem="error")
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match="params.annotator 'ann_c' is not one of"):
        folder(root, annotator="ann_c")


def test_a_run_leaves_bad_samples_out_and_its_detector_predicts_new_images(tmp_path):
    root, truth = messy_folder(tmp_path)
    matrix = tmp_path / "mine.toml"
    matrix.write_text(f"""
name = "mine"
profile = "smoke"
image_size = 32
labels = [4]
output = "{tmp_path / 'results'}"
cache_dir = "{tmp_path / 'cache'}"
save_models = true

[finetune]
epochs = 3
samples_per_epoch = 8

[[datasets]]
name = "folder"
params = {{ root = "{root}", labels = ["ann_a", "ann_b"], landmarks = {json.dumps(NAMES)}, spacing = 0.1 }}

[[pretrainers]]
name = "scratch"

[[backbones]]
name = "smp-unet"
params = {{ encoder = "tu-resnet10t", encoder_depth = 3, decoder_channels = [32, 16, 8] }}

[[heads]]
name = "gaussian"
""")
    m = load_matrix(matrix)
    assert run_matrix(m, quiet=True).ok == 1
    (run,) = results.read_runs([m.results_dir])
    assert sorted(json.loads(run["excluded"])) == ["007", "009"] and run["model_saved"]
    curves = results.read_table("curves", run["_file"]).to_pylist()
    assert [c["epoch"] for c in curves] == [1, 2, 3] and all(c["lr"] > 0 and c["val_loss"] > 0 for c in curves)

    stored = results.read_table("predictions", run["_file"], split="test").to_pylist()
    test_ids = sorted({r["image_id"] for r in stored})
    new_images = tmp_path / "new"
    new_images.mkdir()
    for sample_id in test_ids:
        source = root / "images" / ("scan_010.png" if sample_id == "010" else f"{sample_id}.png")
        (new_images / f"{sample_id}.png").write_bytes(source.read_bytes())
    chosen, why = choose_run([m.results_dir], dataset="folder", labels=4)
    assert "lowest validation MRE" in why
    table, labelme, _ = predict_folder(load_detector(chosen), new_images, tmp_path / "out", device=torch_cpu())
    with table.open() as handle:
        predicted = {row["id"]: row for row in csv.DictReader(handle)}
    for r in stored:  # the run's own test predictions, again
        row = predicted[r["image_id"]]
        assert float(row[f"{r['landmark']}_x"]) == pytest.approx(r["x"], abs=2e-3)
        assert float(row[f"{r['landmark']}_y"]) == pytest.approx(r["y"], abs=2e-3)
        # the run's calibrated region, in this image's pixels (0.1 mm each)
        assert float(row[f"{r['landmark']}_radius"]) == pytest.approx(r["radius_adaptive"] / 0.1, rel=1e-3, abs=2e-3)
    reread = FolderDataset(FolderDataset.Params(root=str(tmp_path / "out"), images="none", labels="labelme",
                                                landmarks=NAMES, fractions=[1.0, 0.0, 0.0]))
    assert sorted(reread.split("train")) == test_ids  # labelme opens them, and so does lmbench
    for sample_id in test_ids:
        sample = reread.load(sample_id)
        assert sample.image.shape == (HEIGHT, WIDTH)
        expected = [[float(predicted[sample_id][f"{n}_{a}"]) for a in "xy"] for n in NAMES]
        np.testing.assert_allclose(sample.landmarks, expected, atol=1e-3)

    shown = lmbench_cli("predict", str(m.results_dir), "--images", str(new_images), "--out", str(tmp_path / "cli"),
                        "--run", run["run_key"], "--device", "cpu")
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "cli" / "predictions.csv").read_text() == table.read_text()
    figures = write_report([m.results_dir], tmp_path / "report")
    assert {"folder-curves.png", "folder-reliability.png"} <= {f.name for f in figures}
    page = (tmp_path / "report" / "index.html").read_text()  # the calibrated regions beside the errors
    assert 'data-column="coverage"' in page and 'data-column="radius"' in page


def test_predict_says_what_is_missing(tmp_path):
    from lmbench.core.errors import LmbenchError

    with pytest.raises(LmbenchError, match="name a run"):
        choose_run([tmp_path])
    with pytest.raises(LmbenchError, match="no finished run for dataset 'folder' with 4 labels"):
        choose_run([tmp_path], dataset="folder", labels=4)


def torch_cpu():
    import torch

    return torch.device("cpu")


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".jpg"])
def test_8_and_16_bit_images_load(tmp_path, suffix):
    ramp = np.linspace(0, 1, 60 * 50).reshape(60, 50)
    eight = (ramp * 255).round().astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / f"a8{suffix}")
    assert np.abs(read_image(tmp_path / f"a8{suffix}") - ramp).max() < (0.05 if suffix == ".jpg" else 0.003)
    if suffix in (".png", ".tif"):
        sixteen = (ramp * 65535).round().astype(np.uint16)
        Image.fromarray(sixteen).save(tmp_path / f"a16{suffix}")
        assert np.abs(read_image(tmp_path / f"a16{suffix}") - ramp).max() < 1e-4  # all 16 bits kept


def test_dicom_brings_its_pixel_spacing(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = (np.linspace(0, 1, HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) * 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID, meta.MediaStorageSOPClassUID = ExplicitVRLittleEndian, SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = HEIGHT, WIDTH, 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.15, 0.15]
    ds.PixelData = pixels.tobytes()
    root = tmp_path / "dicom"
    (root / "images").mkdir(parents=True)
    ds.save_as(root / "images" / "001.dcm", enforce_file_format=True)
    image, spacing = read_image_and_spacing(root / "images" / "001.dcm")
    assert spacing == pytest.approx(0.15) and image[0, 0] == pytest.approx(1.0) and image[-1, -1] == pytest.approx(0.0)
    (root / "landmarks.csv").write_text("id,x,y\n001,10,20\n")
    dataset = FolderDataset(FolderDataset.Params(root=str(root), train=["001"], val=["001"], test=["001"]))
    assert dataset.unit == "mm" and dataset.load("001").spacing == pytest.approx(0.15)
    Image.fromarray((pixels >> 4).astype(np.uint8)).save(root / "images" / "002.png")  # a PNG beside it: no mm
    (root / "landmarks.csv").write_text("id,x,y\n001,10,20\n002,10,20\n")
    mixed = FolderDataset(FolderDataset.Params(root=str(root), train=["001"], val=["002"], test=["002"]))
    assert mixed.unit == "px" and mixed.load("002").image.shape == (HEIGHT, WIDTH)
    assert mixed.problems() == ["1 DICOM files among 1 other images: every image measured in pixels (set "
                                "params.spacing to measure in mm)"]


def test_a_messy_csv_is_read_row_by_row(tmp_path):
    root, truth = messy_folder(tmp_path)
    rows = ["id," + ",".join(f"{n}_x,{n}_y" for n in NAMES)]
    rows += [f"{i}," + ",".join(f"{v:.3f}" for v in truth[i].ravel()) for i in ("001", "002", "003")]
    rows += ["004," + ",".join(f"{v:.3f}" for v in truth["004"].ravel()) + ",5,5",  # one landmark too many
             "005,1,2,3", "006,1,2,3,4,5,6,7,nan", "002,1,2,3,4,5,6,7,8"]
    (root / "landmarks.csv").write_text("\n".join(rows) + "\n")
    dataset = FolderDataset(FolderDataset.Params(root=str(root), landmarks=NAMES, fractions=[0.34, 0.33, 0.33]))
    excluded = dataset.excluded()
    assert sorted(excluded) == ["002", "004", "005", "006"]
    assert "line 5: 5 landmarks, expected 4" in excluded["004"] and "appears on lines 3 and 8" in excluded["002"]
    assert "line 6: expected an id then x,y pairs, got 4 fields" in excluded["005"] and "'nan' is not a finite number" in excluded["006"]
    np.testing.assert_allclose(dataset.load("003").landmarks, truth["003"], atol=1e-3)


def test_data_check_never_holds_every_image_at_once():
    """A release's full-size images (ISBI: 400 of 1935 x 2400) would not fit in memory together."""
    alive = []

    class Tracked(SyntheticHands):
        def load(self, sample_id):
            sample = super().load(sample_id)
            alive.append(weakref.ref(sample.image))
            self.most = max(getattr(self, "most", 0), sum(ref() is not None for ref in alive))
            return sample

    dataset = Tracked(SyntheticHands.Params(n_train=80, n_val=10, n_test=10))
    report = check_dataset("synthetic", dataset)
    assert sum(report.splits.values()) == 100 and report.image_sizes is not None
    assert dataset.most <= 40  # those in flight in the decoding threads (at most 32), not all 100


def test_the_default_detector_is_chosen_on_the_validation_split_never_the_test_split(tmp_path):
    from conftest import fake_run_row

    def metric(split, value):
        return {"split": split, "eval_mode": "native", "metric": "mre", "landmark": "all", "value": value, "unit": "mm"}

    # a: best on validation; b: best on test, by chance
    for key, val, test in (("a" * 16, 2.0, 5.0), ("b" * 16, 3.0, 1.0)):
        results.write_run(tmp_path, fake_run_row(key, "scratch", 4, 0), [metric("val", val), metric("test", test)], [],
                          [], lambda path: path.parent.mkdir(exist_ok=True) or path.write_bytes(b"weights"))
    chosen, why = choose_run([tmp_path], dataset="synthetic", labels=4)
    assert chosen["run_key"] == "a" * 16
    assert "lowest validation MRE (2.00 mm) of the 2 finished runs" in why


def test_a_wrong_landmark_list_says_what_is_wrong_with_the_first_annotation(tmp_path):
    from lmbench.core.errors import DataError

    root, _ = messy_folder(tmp_path)
    with pytest.raises(DataError, match=r"no valid annotation in ann_a, ann_b: \d+ bad, first .*\.json: .*'l1'"):
        FolderDataset(FolderDataset.Params(root=str(root), labels=["ann_a", "ann_b"], landmarks=["z1", "z2"]))


def test_data_check_decodes_what_a_run_decodes(tmp_path):
    root, _ = messy_folder(tmp_path)
    data = (root / "images" / "004.png").read_bytes()
    (root / "images" / "004.png").write_bytes(data[: len(data) // 2])  # truncated: its header still reads
    image = Image.open(root / "images" / "006.png")
    image.info["transparency"] = int(np.asarray(image)[0, 0])  # a PNG tRNS colour: some pixels see-through
    image.save(root / "images" / "006.png", transparency=int(np.asarray(image)[0, 0]))
    report = check_dataset("folder", folder(root))
    failed = [line for line in report.errors if not line.startswith("left out: ")]
    assert not report.usable and report.failing == 2 and len(failed) == 2
    assert any("004.png: unreadable image" in line for line in failed)
    assert any("006.png: image has transparent pixels (mode L, a transparent colour)" in line for line in failed)
    shown = lmbench_cli("data", "check", "--dataset", "folder", "--root", str(root), "-p", 'labels=["ann_a", "ann_b"]',
                        "-p", f"landmarks={json.dumps(NAMES)}")
    assert shown.returncode == 1 and "not usable: 2 images of the splits fail to load" in shown.stdout


def test_a_tiny_image_is_refused_and_a_stray_dicom_leaves_the_folder_in_pixels(tmp_path):
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    with pytest.raises(DataError, match=r"dot.png: a 1x1 image; landmark images need at least 16 pixels a side"):
        read_image(tmp_path / "dot.png")
    root, _ = messy_folder(tmp_path)
    (root / "images" / "016.png").unlink()
    (root / "images" / "016.dcm").write_bytes(b"\0" * 128 + b"DICM")  # a DICOM without pixel data
    for annotator in ("ann_a", "ann_b"):
        shapes = json.loads((root / annotator / "016.json").read_text())["shapes"]
        write_labelme(root / annotator / "016.json", shapes, "../images/016.dcm")
    dataset = folder(root)
    assert dataset.unit == "px" and "016" in dataset.excluded()  # not every PNG "without pixel spacing"
    assert check_dataset("folder", dataset).usable
