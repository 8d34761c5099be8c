"""Writes lmbench/reference_tables/paper.parquet: every number of Tables 1-5 of Di Via et al. (WACV 2025), parsed from
the paper's text (the markdown version beside the project's docs).

    python results/reference/make_paper_reference.py PATH/divia2025-ddpm-fewshot-landmarks.md

Rows follow lmbench's metrics schema (split, eval_mode, metric, landmark, value, unit) plus
what identifies a row without a run: source (the table), dataset, method as printed,
pretrainer and head labels as lmbench names them, labels, std and seeds (3 in every table).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lmbench.reporting.reference import REFERENCE_DIR, write_reference

METHODS = {  # as printed -> (pretrainer, head, backbone)
    "ImageNet": ("imagenet", "gaussian", "smp-unet"),
    "MoCoV3": ("mocov3", "gaussian", "smp-unet"),
    "SimCLRv2": ("simclrv2", "gaussian", "smp-unet"),
    "DINO": ("dino", "gaussian", "smp-unet"),
    "Our method with [35]": ("ddpm", "contour-hugging", "ddpm-unet"),
    "Our method": ("ddpm", "gaussian", "ddpm-unet"),
    "YOLO+": ("scratch (trained on isbi2015+hand+chest)", "gaussian-bce", "yolo-universal"),
}
DATASETS = {  # dataset -> (unit, SDR thresholds)
    "chest": ("px", ["3", "6", "9"]),
    "isbi2015": ("mm", ["2", "2.5", "3", "4"]),
    "hand": ("mm", ["2", "4", "10"]),
}
NUMBER = r"(\d+\.\d+)(?: ± (\d+\.\d+))?"


def cells(line: str) -> list[tuple[float, float | None]]:
    return [(float(v), float(s) if s else None) for v, s in re.findall(NUMBER, re.sub(r"</?b>", "", line))]


def rows(source, dataset, method, labels, values, pretrainer=None):
    unit, thresholds = DATASETS[dataset]
    own_pretrainer, head, backbone = METHODS[method]
    names = ["mre"] + [f"sdr@{t}" for t in thresholds]
    assert len(values) == len(names), (source, method, labels, values)
    for metric, (value, std) in zip(names, values):
        yield {
            "source": source, "dataset": dataset, "method": method, "pretrainer_label": pretrainer or own_pretrainer,
            "head_label": head, "backbone_label": backbone, "labels": labels, "seeds": 3,
            "split": "test", "eval_mode": "paper", "metric": metric, "landmark": "all",
            "value": value, "std": std, "unit": "%" if metric.startswith("sdr") else unit,
        }


def table_block(text: str, number: int) -> list[str]:
    start = text.index(f"Table {number}:")
    end = min((text.find(f"Table {n}:", start + 1) for n in range(1, 7) if text.find(f"Table {n}:", start + 1) > 0),
              default=len(text))
    return text[start:end].splitlines()


def parse(text: str) -> list[dict]:
    out = []
    for number, dataset in ((1, "chest"), (2, "isbi2015"), (3, "hand")):
        labels = None
        for line in table_block(text, number):
            parts = line.split("\t")
            if len(parts) < 3 or parts[1] not in METHODS:
                continue
            labels = int(parts[0]) if parts[0].strip() else labels
            out += rows(f"Table {number}", dataset, parts[1], labels, cells(line))
    for line in table_block(text, 4):
        parts = line.split("\t")
        if parts[0] in METHODS and len(parts) > 2:
            values = cells(line)
            labels = int(parts[1])
            for dataset, chunk in (("chest", values[0:4]), ("isbi2015", values[4:9]), ("hand", values[9:13])):
                out += rows("Table 4", dataset, parts[0], labels, chunk)
    for line in table_block(text, 5):
        parts = line.split("\t")
        if parts[0].strip().isdigit() and len(parts) > 5:
            values = cells(line)
            for dataset, chunk in (("chest", values[0:4]), ("isbi2015", values[4:9])):
                out += rows("Table 5", dataset, "Our method", int(parts[0]), chunk, pretrainer="ddpm (pre-trained on hand)")
    return out


if __name__ == "__main__":
    found = parse(Path(sys.argv[1]).read_text())
    write_reference(found, REFERENCE_DIR / "paper.parquet")
    print(f"{len(found)} rows")
