"""The plugin's own tests, written as any third party would: lmbench.testing on generated data."""

import numpy as np
import pytest
from lmbench_landmarks_csv.dataset import LandmarksCsv
from PIL import Image

from lmbench.api import DataError
from lmbench.testing import check_dataset

NAMES = ["nasion", "sella", "menton"]


def write_folder(root, count=10, spacing_header=True):
    """``count`` generated images with a bright blob at each landmark, and their table,
    saved as a spreadsheet would: UTF-8 with a byte-order mark."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    lines = ["id," + ",".join(f"{n}_{axis}" for n in NAMES for axis in "xy")]
    yy, xx = np.mgrid[:60, :50]
    for i in range(count):
        points = np.column_stack([rng.uniform(5, 45, 3), rng.uniform(5, 55, 3)])
        image = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 6) for x, y in points)
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
        lines.append(f"{i:03d}," + ",".join(f"{v:.2f}" for v in points.ravel()))
    (root / "landmarks.csv").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())


def test_the_dataset_keeps_lmbenchs_contract(tmp_path):
    write_folder(tmp_path / "ceph")
    dataset = LandmarksCsv(LandmarksCsv.Params(root=tmp_path / "ceph", spacing=0.1))
    check_dataset(dataset)
    assert dataset.landmark_names == NAMES and dataset.unit == "mm"
    assert [len(dataset.split(s)) for s in ("train", "val", "test")] == [7, 1, 2]
    assert dataset.load("000").landmarks.shape == (3, 2)


def test_a_bad_row_is_one_line_naming_the_file_and_line(tmp_path):
    write_folder(tmp_path / "ceph")
    table = tmp_path / "ceph" / "landmarks.csv"
    table.write_bytes(table.read_bytes().replace(b"\n003,", b"\n003,x", 1))
    with pytest.raises(DataError, match=r"landmarks.csv: line 5: 'x\d"):
        LandmarksCsv(LandmarksCsv.Params(root=tmp_path / "ceph"))
