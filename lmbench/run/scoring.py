"""A trained detector scored: metric rows (native and paper evaluation), prediction rows and conformal regions, on the validation split first and the test split once."""

from __future__ import annotations

import numpy as np
import torch

from lmbench.config.profiles import FinetuneConfig
from lmbench.config.specs import RunSpec
from lmbench.core.interfaces import HeadStrategy
from lmbench.data.geometry import to_input, to_original
from lmbench.detector import matching
from lmbench.evaluate import conformal
from lmbench.evaluate.metrics import radial_errors, summarize, summarize_regions
from lmbench.evaluate.paper_eval import paper_errors
from lmbench.run.context import RunContext
from lmbench.run.splits import Splits
from lmbench.train import engine, timing


def predict(spec: RunSpec, dataset, part, model, head: HeadStrategy, backbone, config: FinetuneConfig,
            ctx: RunContext) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """A split's (M, N, 2) landmarks in input pixels and in original pixels, and the (M, N, 2, 2)
    input-pixel covariances of where each may be. A matching head reads the images at their
    original size, a few at a time."""
    if head.fine_tunes:
        points, covariances = engine.predict(model, head, part.images, config.eval_batch_size, ctx.device,
                                             config.precision)
        predicted_input = points.numpy()
        predicted = np.stack([to_original(p, shape, spec.image_size) for p, shape in zip(predicted_input, part.shapes)])
        return predicted_input, predicted, covariances
    found, covariances = [], []
    for start in range(0, len(part.ids), config.eval_batch_size):
        images = [dataset.load(i).image for i in part.ids[start:start + config.eval_batch_size]]
        points, spread = matching.locate(head, backbone, model, images, spec.image_size, ctx.device)
        found.append(points)
        covariances.append(spread)
    predicted = np.concatenate(found)
    predicted_input = np.stack([to_input(p, shape, spec.image_size) for p, shape in zip(predicted, part.shapes)])
    return predicted_input, predicted, torch.cat(covariances)


def score(spec: RunSpec, data: Splits, model, head: HeadStrategy, config: FinetuneConfig, ctx: RunContext,
          backbone=None):
    """Metric rows (native and paper evaluation) and prediction rows on the validation and test
    splits, and the conformal regions calibrated on the validation split. The validation
    split's numbers are for choosing settings (Figure 2's checkpoint, say), so that the test
    split is read once."""
    dataset = data.dataset
    if head.calibrates:
        with timing.stage("prediction"):
            logits = torch.cat([out.cpu() for out in engine.logits(model, data.val.images, config.eval_batch_size,
                                                                      ctx.device, config.precision)])
        head.calibrate(logits, data.val.landmarks)
    metrics, predictions = [], []
    names, regions = dataset.landmark_names, None
    for split, part in (("val", data.val), ("test", data.test)):
        with timing.stage("prediction"):  # the network and the head's decoding
            predicted_input, predicted, covariances = predict(spec, dataset, part, model, head, backbone, config, ctx)
        errors = radial_errors(predicted, part.original_landmarks, part.spacings, dataset.unit)
        paper = paper_errors(dataset, predicted_input, part.original_landmarks, part.shapes, part.spacings,
                             spec.image_size)
        spreads = conformal.spreads_of(covariances.numpy(), part.shapes, spec.image_size,
                                       part.spacings if dataset.unit == "mm" else None)
        if regions is None:  # calibrated on the validation split, which comes first
            regions = conformal.calibrate(errors, spreads, spec.conformal_level)
        fixed, adaptive = conformal.radii(regions, spreads)
        rows = [("native", row) for row in summarize(errors, dataset.thresholds, names, dataset.failure_threshold)]
        rows += [("paper", row) for row in summarize(paper, dataset.thresholds, names, dataset.failure_threshold)]
        if split == "test":
            rows += [("native", row) for row in summarize_regions(errors, fixed, adaptive, names)]
        metrics += [
            {"split": split, "eval_mode": mode, "metric": metric, "landmark": landmark, "value": value,
             "unit": "%" if metric.startswith(("sdr", "failure", "coverage")) else dataset.unit}
            for mode, (metric, landmark, value) in rows
        ]
        predictions += [
            {"split": split, "image_id": image_id, "landmark_index": j, "landmark": name,
             "x": float(predicted[i, j, 0]), "y": float(predicted[i, j, 1]),
             "x_true": float(part.original_landmarks[i, j, 0]), "y_true": float(part.original_landmarks[i, j, 1]),
             "error": float(errors[i, j]), "unit": dataset.unit, "spread": float(spreads[i, j]),
             "radius": float(fixed[i, j]), "radius_adaptive": float(adaptive[i, j])}
            for i, image_id in enumerate(part.ids)
            for j, name in enumerate(names)
        ]
    return metrics, predictions, predicted_input, regions  # the test split's points, in input pixels

