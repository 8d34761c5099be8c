"""A fine-tuned detector kept beside its run's results, and put to use on new images.

A run with ``save_models`` writes ``models/<run_key>.safetensors``: the network's weights
(``model.``), the head's calibration (its tensor attributes, ``head.``), and as JSON what
rebuilding needs beyond the run row, which holds the backbone and head specs: the landmark
count and names, the input size, precision. A results folder shared with a colleague can
be read without running anything it holds.
``lmbench predict`` loads one and writes its predictions at each image's original size as a
CSV file and as labelme files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmbench.core.errors import CorruptFile, DataError, LmbenchError
from lmbench.core.interfaces import Backbone, HeadStrategy
from lmbench.data.geometry import resize_image, to_original
from lmbench.data.io import IMAGE_SUFFIXES, read_image
from lmbench.detector import matching
from lmbench.evaluate import conformal
from lmbench.store import integrity, layout, results, tensorfile
from lmbench.train import engine

FORMAT = 2
LABELME_VERSION = "5.4.1"


def model_file(run: dict) -> Path:
    return layout.model_file(layout.results_dir_of(run["_file"]), run["run_key"])


def saver(model: torch.nn.Module, head: HeadStrategy, num_landmarks, domain: int | None,
          landmark_names, image_size: int, precision: str, regions: dict | None = None):
    """``save(path)`` writing the detector atomically; called before the run row is written.
    ``regions``: the calibrated ``level`` and per-landmark ``scale`` of the adaptive
    uncertainty regions (lmbench.evaluate.conformal)."""
    def save(path: Path) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"head.{k}": v for k, v in vars(head).items() if isinstance(v, torch.Tensor)})
        tensorfile.save(path, tensors, {
            "format": FORMAT, "num_landmarks": num_landmarks, "domain": domain,
            "landmark_names": list(landmark_names), "image_size": image_size, "precision": precision,
            "regions": regions,
        })
    return save


@dataclass
class Detector:
    run: dict
    model: torch.nn.Module
    head: HeadStrategy
    landmark_names: list[str]
    image_size: int
    precision: str
    regions: dict | None = None  # level and per-landmark scale of the adaptive regions; None: saved without
    backbone: Backbone | None = None  # whose feature maps a matching head matches

    def predict(self, images: list[np.ndarray], device: torch.device, batch_size: int = 8
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """(M, N, 2) landmarks in each image's own pixels, for (H, W) images in [0, 1], and
        (M, N) radii of their calibrated uncertainty regions, in those pixels (None for a
        detector saved without)."""
        shapes = [image.shape[:2] for image in images]
        if self.head.fine_tunes:
            inputs = torch.stack([resize_image(image, self.image_size) for image in images])
            points, covariances = engine.predict(self.model, self.head, inputs, batch_size, device, self.precision)
            points = np.stack([to_original(p, shape, self.image_size) for p, shape in zip(points.numpy(), shapes)])
        else:
            points, covariances = matching.locate(self.head, self.backbone, self.model, images, self.image_size,
                                                  device)
        if self.regions is None:
            return points, None
        spreads = conformal.spreads_of(covariances.numpy(), shapes, self.image_size)
        return points, conformal.adaptive_radii(self.regions["scale"], spreads)


def load_detector(run: dict) -> Detector:
    """Rebuild a run's fine-tuned detector from its saved model and its run row."""
    from lmbench.config.specs import ComponentSpec  # plugins load on first use

    path = model_file(run)
    old = path.with_suffix(".pt")
    if not path.exists() and old.exists():
        raise LmbenchError(f"{old}: an older lmbench's model file, a pickle, which lmbench no longer reads (it can "
                           f"run code); run it again with save_models = true (lmbench run --rerun all)")
    if not path.exists():
        raise LmbenchError(f"{path}: run {run['run_key']} kept no model; run it again with save_models = true")
    redo = "run it again with save_models = true (lmbench run --rerun all)"
    try:
        tensors, meta = tensorfile.load(path)
    except CorruptFile as exc:
        results_dir = layout.results_dir_of(run["_file"])
        if integrity.set_aside(path, results_dir) and integrity.set_aside(run["_file"], results_dir):
            redo = (f"set aside under {results_dir / integrity.CORRUPT} with its run row: lmbench run trains "
                    f"run {run['run_key']} again (with save_models = true)")
        raise LmbenchError(f"{exc}; {redo}") from None
    if meta.get("format") != FORMAT:
        raise LmbenchError(f"{path}: saved by another lmbench version (format {meta.get('format')}, "
                           f"this one reads {FORMAT}); {redo}")
    backbone, head = (ComponentSpec(kind, run[kind], run[f"{kind}_label"], json.loads(run[f"{kind}_params"]), {})
                      .instantiate() for kind in ("backbone", "head"))
    model = backbone.build(meta["num_landmarks"], meta["image_size"])
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    if meta["domain"] is not None:
        model = engine.DomainView(model, meta["domain"])
    for name, value in tensors.items():
        if name.startswith("head."):
            setattr(head, name.removeprefix("head."), value)
    return Detector(run, model.eval(), head, meta["landmark_names"], meta["image_size"], meta["precision"],
                    meta.get("regions"), backbone)


def choose_run(roots: list[Path], run_key: str | None = None, dataset: str | None = None,
               labels: int | None = None) -> tuple[dict, str]:
    """A run by its key, or the finished run with a saved model and the lowest *validation* MRE
    for ``dataset`` (label or name) at ``labels`` labels, and why it was taken. The test split
    never chooses: it is read once, to report."""
    runs = results.read_runs(roots)
    if run_key:
        found = [r for r in runs if r["run_key"] == run_key]
        if not found:
            raise LmbenchError(f"no run {run_key!r} under {', '.join(map(str, roots))}")
        return found[0], "named by --run"
    if dataset is None or labels is None:
        raise LmbenchError("name a run: --run KEY, or --dataset D with --labels N for the best one")
    candidates = [r for r in runs if r["status"] == "ok" and r["labels"] == labels
                  and dataset in (r["dataset"], r["dataset_label"])]
    if not candidates:
        raise LmbenchError(f"no finished run for dataset {dataset!r} with {labels} labels")
    kept = [r for r in candidates if model_file(r).exists()]
    if not kept:
        raise LmbenchError(f"none of the {len(candidates)} finished runs for {dataset!r} with {labels} labels kept "
                           f"its model; run them with save_models = true")

    def validation_mre(run: dict) -> float:
        mre = results.overall(run["_file"], "val", "native")
        return float("inf") if mre is None else mre

    best = min(kept, key=validation_mre)
    return best, (f"the lowest validation MRE ({validation_mre(best):.2f} {best['unit']}) of the {len(kept)} finished "
                  f"runs for {dataset} with {labels} labels that kept their model; the test split chose nothing")


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise LmbenchError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _shape(label: str, kind: str, points: list, description: str = "") -> dict:
    return {"label": label, "points": points, "group_id": None, "description": description,
            "shape_type": kind, "flags": {}, "mask": None}


def labelme_document(points: np.ndarray, names: list[str], image: Path, shape: tuple[int, int], folder: Path,
                     radii: np.ndarray | None = None, level: float | None = None) -> dict:
    """A labelme file of one point per landmark, naming ``image`` relative to ``folder``; with
    ``radii``, a circle per landmark (``<name>_radius``) showing its uncertainty region."""
    shapes = [_shape(name, "point", [[float(x), float(y)]]) for name, (x, y) in zip(names, points)]
    if radii is not None:
        shapes += [_shape(f"{name}_radius", "circle", [[float(x), float(y)], [float(x + r), float(y)]],
                          f"{level:.0%} conformal region")
                   for name, (x, y), r in zip(names, points, radii) if np.isfinite(r)]
    return {
        "version": LABELME_VERSION, "flags": {},
        "shapes": shapes,
        "imagePath": os.path.relpath(image, folder), "imageData": None,
        "imageHeight": int(shape[0]), "imageWidth": int(shape[1]),
    }


def predict_folder(detector: Detector, images: Path, out: Path, device: torch.device, batch_size: int = 8,
                   on_progress=lambda done, total: None, skip_unreadable: bool = False,
                   max_pixels: int | None = None) -> tuple[Path, Path, list[str]]:
    """Predict every image of ``images``; write ``out/predictions.csv`` (one row per image:
    id, then x and y of each landmark, then each landmark's uncertainty radius where the
    detector was saved with its regions) and ``out/labelme/<id>.json``, only once all are
    predicted. An unreadable image stops it with nothing written or, with ``skip_unreadable``,
    is left out. Returns both paths and the one-line reason of each image left out."""
    files = image_files(images)
    names = detector.landmark_names
    rows, documents, skipped = [], {}, []
    for start in range(0, len(files), batch_size):
        chunk, pixels = [], []
        for path in files[start:start + batch_size]:
            try:
                pixels.append(read_image(path, max_pixels))
                chunk.append(path)
            except DataError as exc:
                if not skip_unreadable:
                    raise DataError(f"{exc}; nothing written (--skip-unreadable predicts the other images)") from None
                skipped.append(str(exc))
        points, radii = detector.predict(pixels, device, batch_size) if chunk else ([], None)
        for i, (path, image) in enumerate(zip(chunk, pixels)):
            radius = radii[i] if radii is not None else None
            rows.append([path.stem, *(f"{v:.3f}" for v in points[i].ravel()),
                         *(f"{r:.3f}" for r in (radius if radius is not None else []))])
            documents[path] = (points[i], image.shape, radius)
        on_progress(min(start + batch_size, len(files)), len(files))
    labelme, table = out / "labelme", out / "predictions.csv"
    out.mkdir(parents=True, exist_ok=True)
    staging = integrity.temporary(out / "predictions")  # beside them: renamed into place, all or nothing
    try:
        (staging / "labelme").mkdir(parents=True)
        level = detector.regions["level"] if detector.regions else None
        for path, (points, shape, radii) in documents.items():
            document = labelme_document(points, names, path.resolve(), shape, labelme.resolve(), radii, level)
            integrity.write_text(staging / "labelme" / f"{path.stem}.json", json.dumps(document, indent=2))
        header = ["id", *(f"{n}_{axis}" for n in names for axis in ("x", "y"))]
        header += [f"{n}_radius" for n in names] if detector.regions else []
        text = io.StringIO()
        csv.writer(text).writerows([header, *rows])
        integrity.write_text(staging / "predictions.csv", text.getvalue())
        if labelme.is_symlink() or labelme.exists():  # an earlier prediction's files make way
            labelme.rename(staging / "earlier-labelme")
        (staging / "labelme").rename(labelme)
        (staging / "predictions.csv").replace(table)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return table, labelme, skipped
