"""Whether a run trained: a verdict per run, from what its pre-training and fine-tuning left.

A leaderboard row whose network learned nothing answers the benchmark's question wrongly, so
every run row carries ``health``: ``"ok"``, or one line naming each problem found. Checks:

- pre-training did not leave chance: the mean loss over the last ``curve_tail`` of its curve
  is not ``curve_tolerance`` (relative) below the loss of a model that learned nothing;
- what it hands on is collapsed: the spread of the part's pooled features over the pool
  images (lightly's ``std_of_l2_normalized``) is below ``min_spread_ratio`` times that of the
  same part freshly initialised; both with batch norm calibrated on the pool images, so that
  the measure compares weights, not running statistics;
- the pretext loss on images the pre-training never saw is within ``held_out_tolerance`` of
  chance (a pretrainer offering ``Pretrainer.held_out_loss``: DDPM's denoising loss);
- fine-tuning's best validation epoch was its last (``still_improving``: stopped while still
  improving), or a landmark's predictions collapsed to one point (their spread over the test
  images under ``min_prediction_spread`` input pixels).

Measures are computed once per pre-train key and checkpoint and kept in the pre-train cache
entry; thresholds are read at run time. A verdict never changes a number or a run key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lmbench.config.health import HealthSettings
from lmbench.store import integrity


def curve_measures(losses: list[float], chance: float | None, tail: float) -> dict:
    if not losses:
        return {}
    last = losses[-max(1, math.ceil(len(losses) * tail)):]
    return {"first_loss": losses[0], "last_loss": float(np.mean(last)), "chance": chance}


def _calibrate_batch_norm(part, images, batch: int) -> None:
    """Replace every batch norm's running statistics with their average over ``images``."""
    from torch.nn.modules.batchnorm import _BatchNorm

    norms = [m for m in part.modules() if isinstance(m, _BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    if norms:
        part.train()
        for chunk in images.split(batch):
            part(chunk)
    part.eval()


def feature_spread(pretrainer, part, images, batch: int = 16) -> float | None:
    """lightly's ``std_of_l2_normalized`` of the part's features of ``images`` (1/sqrt(D) for
    features spread evenly over the sphere, 0 for collapsed ones), or None without features."""
    import torch
    from lightly.utils.debug import std_of_l2_normalized

    with torch.no_grad():
        _calibrate_batch_norm(part, images, batch)
        features = [pretrainer.features(part, chunk) for chunk in images.split(batch)]
    if any(f is None for f in features):
        return None
    return float(std_of_l2_normalized(torch.cat(features).float()))


def dense_spread(maps: list) -> float:
    """lightly's ``std_of_l2_normalized`` of every position's feature vector, over the images and
    positions of each feature map, averaged over the maps: what matching needs is positions that
    differ, which a spread of whole-image features cannot tell."""
    from lightly.utils.debug import std_of_l2_normalized

    return float(np.mean([float(std_of_l2_normalized(m.float().flatten(2).transpose(1, 2).flatten(0, 1)))
                          for m in maps]))


def dense_measures(encode_trained, encode_fresh, images) -> dict:
    """The dense spread of a matching row's features on ``images``, and of the same network freshly
    initialised: the collapse probe of rows that match rather than fine-tune."""
    return {"dense_spread": dense_spread(encode_trained(images)), "dense_spread_init": dense_spread(encode_fresh(images))}


def pretrain_measures(pretrainer, backbone, weights: dict, pool, held_out, num_landmarks: int, seed: int, device,
                      settings: HealthSettings) -> dict:
    """Measures of what a pre-training hands on: its features' spread against a fresh part's,
    and the pretext loss on held-out images against chance."""
    import torch

    out: dict = {}
    size = pool.shape[-1]
    probe = pool[: settings.probe_images].to(device)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # the initialisation pre-training started from
            fresh = backbone.build_part(pretrainer.produces, num_landmarks, size).to(device)
            trained = backbone.build_part(pretrainer.produces, num_landmarks, size).to(device)
            backbone.load_pretrained(trained, weights)  # what fits: a part built with other output channels
            spread = feature_spread(pretrainer, trained, probe)
            if spread is not None:
                out.update(spread=spread, spread_init=feature_spread(pretrainer, fresh, probe))
            if len(held_out):
                result = pretrainer.held_out_loss(backbone, trained.eval(), held_out[: settings.probe_images].to(device))
                if result is not None:
                    out.update(held_out_loss=result[0], held_out_chance=result[1])
    except Exception as exc:  # a probe that cannot run leaves the run's numbers alone and says so
        out["probe_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return out


def pretrain_findings(measures: dict, settings: HealthSettings) -> list[str]:
    found = []
    if "probe_error" in measures:
        found.append(f"health probe failed ({measures['probe_error']}): override Pretrainer.features or held_out_loss")
    last, chance = measures.get("last_loss"), measures.get("chance")
    if last is not None and chance and last >= (1 - settings.curve_tolerance) * chance:
        found.append(f"pre-training did not leave chance (loss {last:.3f}, chance {chance:.3f})")
    dense = "dense_spread" in measures  # a matching row: its positions must differ, not its images
    spread, initial = (measures.get("dense_spread"), measures.get("dense_spread_init")) if dense else \
        (measures.get("spread"), measures.get("spread_init"))
    if spread is not None and initial and spread < settings.min_spread_ratio * initial:
        found.append(f"pre-trained {'dense ' if dense else ''}features collapsed (spread {spread:.3f}, "
                     f"{initial:.3f} at initialisation)")
    held, chance = measures.get("held_out_loss"), measures.get("held_out_chance")
    if held is not None and chance and held >= (1 - settings.held_out_tolerance) * chance:
        found.append(f"pre-training does not denoise held-out images (loss {held:.3f}, chance {chance:.3f})")
    return found


def finetune_findings(epochs: int, best_epoch: int, predicted: np.ndarray, settings: HealthSettings) -> list[str]:
    """``predicted``: (M, N, 2) test predictions in input pixels."""
    found = []
    if settings.still_improving and epochs > 1 and best_epoch == epochs:
        found.append(f"fine-tuning still improving at its last epoch ({epochs})")
    if len(predicted) > 1:
        spread = np.sqrt(predicted.var(axis=0).sum(axis=-1))  # per landmark, over images
        collapsed = int((spread < settings.min_prediction_spread).sum())
        if collapsed:
            found.append(f"predictions collapsed to one point for {collapsed} of {len(spread)} landmarks")
    return found


def mean_shape_findings(mre: float | None, labelled, val, unit: str) -> list[str]:
    """A matching row (no fine-tuning) whose validation MRE is no better than placing every
    landmark where the labelled images have it on average (in input pixels, mapped to each
    validation image): its features did not find the landmarks. ``labelled`` and ``val`` are
    ``Prepared`` splits; the test split is never read here."""
    from lmbench.data.geometry import to_original
    from lmbench.evaluate.metrics import radial_errors

    if mre is None or not len(val.ids):
        return []
    mean = labelled.landmarks.double().mean(dim=0).numpy()
    placed = np.stack([to_original(mean, shape, val.images.shape[-1]) for shape in val.shapes])
    baseline = float(radial_errors(placed, val.original_landmarks, val.spacings, unit).mean())
    if mre >= baseline:
        return [f"matching no better than the labelled images' mean shape (validation MRE {mre:.2f} against "
                f"{baseline:.2f} {unit})"]
    return []


def verdict(findings: list[str]) -> str:
    return "; ".join(findings) if findings else "ok"


def read_measures(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_measures(measures: dict, path: Path) -> None:
    integrity.write_text(path, json.dumps(measures, indent=2, sort_keys=True))
