"""The paper's datasets on the real data in ../shared/data, and a researcher's own folder."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from lmbench.config.matrix import load_matrix
from lmbench.core.errors import DataError
from lmbench.data.geometry import to_input, to_original
from lmbench.data.io import read_image
from lmbench_plugins.xray.chest import PAPER_EXCLUSIONS, ShenzhenChest
from lmbench_plugins.xray.folder import FolderDataset
from lmbench_plugins.xray.hand import DigitalHandAtlas
from lmbench_plugins.xray.isbi2015 import Isbi2015

from conftest import ROOT, SHARED_DATA

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared x-ray data not found at {SHARED_DATA}")
ISBI, HAND, CHEST = SHARED_DATA / "isbi2015", SHARED_DATA / "hand", SHARED_DATA / "chest"


def isbi(**params):
    return Isbi2015(Isbi2015.Params(root=str(params.pop("root", ISBI)), **params))


@needs_data
def test_isbi_splits_annotators_and_spacing():
    d = isbi()
    assert [len(d.split(s)) for s in ("train", "val", "test")] == [130, 20, 250]
    assert d.split("train")[0] == "001" and d.split("val")[0] == "131" and d.split("test")[-1] == "400"
    assert [len(isbi(split=s).split("test")) for s in ("test1", "test2")] == [150, 100]
    sample = d.load("001")
    senior = np.loadtxt(ISBI / "400_senior" / "001.txt", delimiter=",")[:19]
    junior = np.loadtxt(ISBI / "400_junior" / "001.txt", delimiter=",")[:19]
    np.testing.assert_allclose(sample.landmarks, (senior + junior) / 2)
    np.testing.assert_allclose(isbi(annotator="junior").load("001").landmarks, junior)
    assert sample.spacing == 0.1 and sample.image.shape == (2400, 1935)
    assert sample.image.dtype == np.float32 and 0 <= sample.image.min() < sample.image.max() <= 1


@needs_data
def test_isbi_accepts_the_original_releases_classification_lines(tmp_path):
    root = tmp_path / "isbi2015"
    (root / "jpg").mkdir(parents=True)
    shutil.copy(ISBI / "jpg" / "001.jpg", root / "jpg" / "001.jpg")
    for annotator in ("400_senior", "400_junior"):
        (root / annotator).mkdir()
        text = (ISBI / annotator / "001.txt").read_text().strip()
        (root / annotator / "001.txt").write_text(text + "\n" + "\n".join(["1", "2", "3", "1", "2", "3", "1", "2"]) + "\n")
    np.testing.assert_allclose(isbi(root=root).load("001").landmarks, isbi().load("001").landmarks)


@needs_data
def test_chest_exclusions_split_and_the_images_actually_present():
    d = ShenzhenChest(ShenzhenChest.Params(root=str(CHEST)))
    members = d.split("train") + d.split("val") + d.split("test")
    assert not set(members) & set(PAPER_EXCLUSIONS)
    assert [len(d.split(s)) for s in ("train", "val", "test")] == [152, 29, 32]  # of 195 / 34 / 41
    assert any("train: 43 of 195 protocol images missing" in p for p in d.problems())
    sample = d.load("0001")
    assert sample.spacing is None and d.unit == "px" and sample.image.shape == (128, 128)
    np.testing.assert_allclose(sample.landmarks[0], [0.41625 * 128 - 0.5, 0.14375 * 128 - 0.5])


@needs_data
def test_hand_labels_for_the_images_present_and_the_gaps_reported():
    d = DigitalHandAtlas(DigitalHandAtlas.Params(root=str(HAND)))
    assert d.split("train") == ["3167", "3177", "3229", "3231", "5245", "7081", "7088", "7232", "7236"]
    problems = " | ".join(d.problems())
    assert "901 of 910 labelled ids have no image" in problems
    assert "5148 (landmark 36)" in problems and "5522 (landmark 28)" in problems
    sample = d.load("3167")
    assert sample.spacing == pytest.approx(50 / np.linalg.norm(sample.landmarks[0] - sample.landmarks[4]))
    payer = DigitalHandAtlas(DigitalHandAtlas.Params(root=str(HAND), scale_pair=[1, 5])).load("3167")
    assert payer.spacing == pytest.approx(50 / np.linalg.norm(sample.landmarks[1] - sample.landmarks[5]))
    small = DigitalHandAtlas(DigitalHandAtlas.Params(root=str(HAND), train_size=5, val_size=2))
    assert [len(small.split(s)) for s in ("train", "val", "test")] == [5, 2, 2]


@needs_data
def test_landmarks_survive_the_trip_to_the_network_and_back():
    """Snapped to whole pixels of a 256 px input and mapped back: within half an input pixel."""
    sample = isbi().load("007")
    shape, size = sample.image.shape, 256
    back = to_original(np.round(to_input(sample.landmarks, shape, size)), shape, size)
    half_pixel = 0.5 * np.array([shape[1], shape[0]]) / size
    assert (np.abs(back - sample.landmarks) <= half_pixel + 1e-9).all()
    assert np.abs(back - sample.landmarks).max() > 0.5  # the snapping really moved them


def hand_root(tmp_path, ids, labelled):
    """A hand atlas layout: a small JPEG per id, label rows for ``labelled``."""
    root = tmp_path / "hand"
    (root / "jpg").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in ids:
        Image.fromarray(np.full((40, 30), 128, np.uint8)).save(root / "jpg" / f"{i}.jpg")
    points = ",".join(f"{5 + j % 20},{5 + j}" for j in range(37))
    (root / "labels" / "all.csv").write_text("".join(f"{i},{points}\n" for i in labelled))
    return root


def published_hand_pool(root, train_size, val_size):
    """The published HandDiffusionDataset's (and the SSL HandDataset's) 'train' phase, restated."""
    files = [name[:-4] for name in sorted(os.listdir(root / "jpg"))]
    return files[:train_size + val_size]


def test_hand_pretraining_pool_as_published_is_the_first_files_in_name_order(tmp_path):
    # the release's case: 4-digit ids, all labelled, one that fails to load (3142's part)
    ids = [str(1000 + 7 * k) for k in range(12)]
    root = hand_root(tmp_path / "release", ids, ids)
    split = dict(train_size=6, val_size=3, exclude=[ids[4]])
    files = DigitalHandAtlas(DigitalHandAtlas.Params(root=str(root), pretrain_pool="files", **split))
    splits = DigitalHandAtlas(DigitalHandAtlas.Params(root=str(root), **split))
    published = published_hand_pool(root, 6, 3)
    assert files.pretrain_pool() == [i for i in published if i != ids[4]] and len(files.pretrain_pool()) == 8
    assert splits.pretrain_pool() == ids[:4] + ids[5:10]  # one image past the published nine, in its place
    assert files.split("test") == splits.split("test") and f"1 left out, not training or validation images: {ids[4]}" in \
        " ".join(files.problems())
    # name order is not numeric order; an unlabelled file counts as the published code counts it;
    # a test image is never pre-trained on
    ids = ["1", "2", "3", "4", "10", "11"]
    root = hand_root(tmp_path / "names", ids + ["0"], ids)
    files = DigitalHandAtlas(DigitalHandAtlas.Params(root=str(root), pretrain_pool="files", train_size=3, val_size=1))
    assert published_hand_pool(root, 3, 1) == ["0", "1", "10", "11"] and files.split("test") == ["10", "11"]
    assert files.pretrain_pool() == ["1"] and "3 left out, not training or validation images: 0, 10, 11" in \
        " ".join(files.problems())


def test_the_paper_profile_pre_trains_on_the_published_hand_pool(tmp_path):
    assert {r.dataset.params["pretrain_pool"] for r in load_matrix(ROOT / "matrices" / "paper-hand.toml").runs} == {"files"}
    quick = (ROOT / "matrices" / "isbi2015-quick.toml").read_text().replace('name = "isbi2015"', 'name = "hand"')
    (tmp_path / "m.toml").write_text(quick)
    assert {r.dataset.params["pretrain_pool"] for r in load_matrix(tmp_path / "m.toml").runs} == {"splits"}


def make_folder(tmp_path, count=6):
    """Six small real chest images as a researcher's folder, with their 6 landmarks."""
    chest = ShenzhenChest(ShenzhenChest.Params(root=str(CHEST)))
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    samples = [chest.load(i) for i in chest.split("train")[:count]]
    for s in samples:
        Image.fromarray((s.image * 255).round().astype(np.uint8)).save(root / "images" / f"case{s.id}.png")
    return root, samples


@needs_data
def test_folder_reads_csv_and_labelme_alike(tmp_path):
    root, samples = make_folder(tmp_path)
    names = [f"p{i}" for i in range(6)]
    rows = ["id," + ",".join(f"x{i},y{i}" for i in range(6))]
    rows += [f"case{s.id}," + ",".join(f"{v:.6f}" for v in s.landmarks.ravel()) for s in samples]
    (root / "landmarks.csv").write_text("\n".join(rows) + "\n")
    (root / "labelme").mkdir()
    for s in samples:
        shapes = [{"label": n, "points": [[float(x), float(y)]], "shape_type": "point"} for n, (x, y) in zip(names, s.landmarks)]
        (root / "labelme" / f"case{s.id}.json").write_text(json.dumps({"shapes": shapes[::-1], "imagePath": f"case{s.id}.png"}))

    split = dict(train=[f"case{s.id}" for s in samples[:3]], val=[f"case{samples[3].id}"], test=[f"case{s.id}" for s in samples[4:]])
    from_csv = FolderDataset(FolderDataset.Params(root=str(root), spacing=0.5, **split))
    from_labelme = FolderDataset(FolderDataset.Params(root=str(root), labels="labelme", landmarks=names, **split))
    assert from_csv.unit == "mm" and from_labelme.unit == "px"
    for sample_id in split["train"]:
        a, b = from_csv.load(sample_id), from_labelme.load(sample_id)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-6)
        assert a.spacing == 0.5 and b.spacing is None
    drawn = FolderDataset(FolderDataset.Params(root=str(root), fractions=[0.5, 0.17, 0.33], seed=3))
    sizes = [len(drawn.split(s)) for s in ("train", "val", "test")]
    assert sizes == [3, 1, 2] and sorted(sum((drawn.split(s) for s in ("train", "val", "test")), [])) == sorted(
        f"case{s.id}" for s in samples)


def isbi_root_with(tmp_path, senior="10,20\n" * 19, image=None):
    """A one-image ISBI layout: a 100x80 image and both annotators' files."""
    root = tmp_path / "isbi2015"
    (root / "jpg").mkdir(parents=True)
    (image or Image.fromarray(np.full((100, 80), 128, np.uint8))).save(root / "jpg" / "001.png")
    for annotator in ("400_senior", "400_junior"):
        (root / annotator).mkdir()
        (root / annotator / "001.txt").write_text(senior)
    return root


@pytest.mark.parametrize(
    "senior, message",
    [
        ("10,20\n" * 18, r"001.txt: expected 19 points, found 18 lines"),
        ("10,20\n" * 18 + "ten,20\n", r"001.txt: line 19: 'ten' is not a number"),
        ("10,20\n" * 18 + "nan,20\n", r"001.txt: line 19: coordinate is nan"),
        ("10,20\n" * 18 + "10 20\n", r"001.txt: line 19: expected 'x,y', got '10 20'"),
        ("10,20\n" * 18 + "85,20\n", r"001.txt: landmark 18 at \(85, 20\) lies outside the 80x100 image"),
    ],
)
def test_bad_annotations_give_one_line_naming_the_file(tmp_path, senior, message):
    root = isbi_root_with(tmp_path, senior=senior)
    with pytest.raises(DataError, match=message) as info:
        isbi(root=root).load("001")
    assert "\n" not in str(info.value)


def test_bad_images_and_roots_give_one_line_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: isbi2015 data root does not exist"):
        isbi(root=tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"unset environment variable"):
        isbi(root="$LMBENCH_NO_SUCH_VARIABLE/isbi2015")
    root = isbi_root_with(tmp_path)
    with pytest.raises(DataError, match=r"jpg/002.jpg: image file is missing"):
        isbi(root=root).load("002")
    assert isbi(root=root).problems() == [
        "399 of 400 images missing: 002, 003, 004, 005, 006, 007, 008, 009"
    ]
    truncated = root / "jpg" / "001.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(DataError, match=r"001.png: unreadable image"):
        read_image(truncated)


def test_sixteen_bit_images_are_scaled_by_their_depth(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.kron(np.array([[0, 32768], [65535, 0]], np.uint16), np.ones((8, 8), np.uint16))).save(path)
    np.testing.assert_allclose(read_image(path)[::8, ::8], [[0, 32768 / 65535], [1, 0]], rtol=1e-6)
