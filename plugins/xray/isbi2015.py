"""ISBI 2015 cephalometric challenge (Wang et al., MedIA 2016): 400 images, 19 landmarks.

Layout: ``jpg/NNN.jpg`` (or ``.bmp``/``.png`` as in the original release, in ``jpg/``,
``bmp/``, ``images/`` or the root), ``400_senior/NNN.txt`` and ``400_junior/NNN.txt`` with
19 ``x,y`` lines in original pixels, possibly followed by classification lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lmbench.api import DataError, Dataset, Sample, check_inside, find_image, read_image, read_point_lines
from lmbench_plugins.xray.common import data_root

LANDMARKS = (
    "sella", "nasion", "orbitale", "porion", "subspinale", "supramentale", "pogonion", "menton",
    "gnathion", "gonion", "lower_incisal_incision", "upper_incisal_incision", "upper_lip", "lower_lip",
    "subnasale", "soft_tissue_pogonion", "posterior_nasal_spine", "anterior_nasal_spine", "articulare",
)
# paper: the few-shot protocol of Di Via et al.; test1/test2: the challenge's two test sets,
# with the challenge's 150 training images split the same way (130 train, 20 validation).
SPLITS = {
    "paper": {"train": (1, 130), "val": (131, 150), "test": (151, 400)},
    "test1": {"train": (1, 130), "val": (131, 150), "test": (151, 300)},
    "test2": {"train": (1, 130), "val": (131, 150), "test": (301, 400)},
}


class Isbi2015(Dataset):
    @dataclass
    class Params:
        root: str = "$LMBENCH_DATA/isbi2015"
        annotator: Literal["mean", "senior", "junior"] = "mean"
        split: Literal["paper", "test1", "test2"] = "paper"

    unkeyed_params = frozenset({"root"})
    landmark_names = LANDMARKS
    unit = "mm"
    thresholds = (2.0, 2.5, 3.0, 4.0)
    spacing = 0.1  # mm per pixel, for every image

    def __init__(self, params=None):
        super().__init__(params)
        self.root = data_root(self.params.root, "isbi2015")
        self._image_folders = [self.root / d for d in ("jpg", "bmp", "png", "images")] + [self.root]

    def split(self, name):
        first, last = SPLITS[self.params.split][name]
        return [f"{i:03d}" for i in range(first, last + 1)]

    def _annotations(self, sample_id: str) -> np.ndarray:
        annotators = ["senior", "junior"] if self.params.annotator == "mean" else [self.params.annotator]
        points = [read_point_lines(self.root / f"400_{a}" / f"{sample_id}.txt", len(LANDMARKS)) for a in annotators]
        return np.mean(points, axis=0)

    def load(self, sample_id):
        path = find_image(self._image_folders, sample_id)
        if path is None:
            raise DataError(f"{self.root / 'jpg' / sample_id}.jpg: image file is missing")
        image = read_image(path)
        landmarks = self._annotations(sample_id)
        check_inside(landmarks, image.shape, self.root / "400_senior" / f"{sample_id}.txt")
        return Sample(sample_id, image, landmarks, self.spacing)

    def annotations(self, sample_id):
        return {a: read_point_lines(self.root / f"400_{a}" / f"{sample_id}.txt", len(LANDMARKS))
                for a in ("senior", "junior")}

    def paper_axis_scale(self, truth, shape, spacing):
        """The published code scales x by the image height and y by its width (2400 and 1935
        px), the axes swapped."""
        return shape[0] / 256 * spacing, shape[1] / 256 * spacing

    def problems(self):
        ids = [f"{i:03d}" for i in range(1, 401)]
        missing = [i for i in ids if find_image(self._image_folders, i) is None]
        return [f"{len(missing)} of 400 images missing: {', '.join(missing[:8])}"] if missing else []
