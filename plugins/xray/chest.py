"""Shenzhen chest x-rays (Candemir et al., IEEE TMI 2014) with Zhu et al.'s 6 landmarks.

Layout: ``pngs/CHNCXR_<id>_0.png`` and ``labels/CHNCXR_<id>_0.txt``: the count on the first
line, then one ``x y`` line per landmark as fractions of width and height. Measured in
pixels of the image as stored. The split is made over the label files, as the paper's code
does, so images missing from a partial copy leave the other ids in their protocol split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lmbench.api import (
    DataError,
    Dataset,
    PositiveInt,
    Sample,
    check_inside,
    find_image,
    read_image,
    read_point_lines,
    read_text_file,
)
from lmbench_plugins.xray.common import data_root, natural_sorted, sized_split, summarize_ids

NUM_LANDMARKS = 6
PAPER_EXCLUSIONS = ["0059", "0178", "0228", "0267", "0295", "0310", "0285", "0276", "0303"]
LABEL_NAME = re.compile(r"CHNCXR_(\d+)_0\.txt")


class ShenzhenChest(Dataset):
    @dataclass
    class Params:
        root: str = "$LMBENCH_DATA/chest"
        train_size: PositiveInt = 195
        val_size: PositiveInt = 34
        exclude: list[str] = field(default_factory=lambda: list(PAPER_EXCLUSIONS))

    unkeyed_params = frozenset({"root"})

    @classmethod
    def finetune_defaults(cls, params):
        return {"max_scale": 0.0}  # the published code scales the other datasets only
    landmark_names = tuple(f"L{i}" for i in range(NUM_LANDMARKS))
    unit = "px"
    thresholds = (3.0, 6.0, 9.0)

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.root = data_root(p.root, "chest")
        if not (self.root / "labels").is_dir():
            raise DataError(f"{self.root / 'labels'}: chest label folder does not exist")
        labelled = [m.group(1) for f in (self.root / "labels").iterdir() if (m := LABEL_NAME.fullmatch(f.name))]
        ids = natural_sorted(i for i in labelled if i not in p.exclude)
        protocol = sized_split(ids, p.train_size, p.val_size)
        self._images = {i: find_image([self.root / "pngs"], f"CHNCXR_{i}_0") for i in ids}
        self._splits = {name: [i for i in members if self._images[i]] for name, members in protocol.items()}
        self._missing = {name: [i for i in members if not self._images[i]] for name, members in protocol.items()}

    def split(self, name):
        return list(self._splits[name])

    def load(self, sample_id):
        image = read_image(self._images[sample_id])
        label_file = self.root / "labels" / f"CHNCXR_{sample_id}_0.txt"
        fractions = read_point_lines(label_file, NUM_LANDMARKS, separator=None, skip=1)  # raises if unreadable
        header = read_text_file(label_file).split("\n", 1)[0].strip()
        if header != str(NUM_LANDMARKS):
            raise DataError(f"{label_file}: first line should be the count {NUM_LANDMARKS}, got {header!r}")
        if (fractions < 0).any() or (fractions > 1).any():
            raise DataError(f"{label_file}: coordinates must be fractions of the image size in [0, 1]")
        height, width = image.shape
        landmarks = fractions * [width, height] - 0.5  # fractions of the extent; pixel centres at integers
        check_inside(landmarks, image.shape, label_file)
        return Sample(sample_id, image, landmarks, None)

    def problems(self):
        return [
            f"{name}: {len(ids)} of {len(ids) + len(self._splits[name])} protocol images missing: {summarize_ids(ids)}"
            for name, ids in self._missing.items() if ids
        ]
