"""A procedurally generated hand-like x-ray dataset, for running lmbench with no data at all.

Each image is rendered from one anatomical template (forearm bones, carpus, three rays of
metacarpal and two phalanges) deformed per image: pose (rotation, scale, shift), shape
(finger spread, flexion, bone lengths and widths) and intensity (exposure, gamma, tissue
density, noise, blur). Landmarks are the bone ends and joint spaces of that same skeleton,
so they are anatomically consistent and visible: joints are dark gaps between the bright
cortical shells of two bones. Everything follows from ``seed`` and the image index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from lmbench.api import DataError, Dataset, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Sample

LANDMARKS = (
    "ulna_tip", "radius_tip",
    "mcp_1", "mcp_2", "mcp_3",
    "pip_1", "pip_2", "pip_3",
    "tip_1", "tip_2", "tip_3",
)
# Template on a 160 x 200 canvas: forearm ends, and per ray its base, MCP, PIP and tip.
FOREARM = np.array([[66.0, 160.0], [94.0, 160.0]])
RAYS = np.array(
    [
        [[64.0, 140.0], [52.0, 100.0], [46.0, 70.0], [42.0, 45.0]],
        [[80.0, 138.0], [80.0, 94.0], [80.0, 60.0], [80.0, 32.0]],
        [[96.0, 140.0], [108.0, 100.0], [114.0, 70.0], [118.0, 45.0]],
    ]
)
CARPUS = np.array([80.0, 150.0])


def _capsule_distance(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from every pixel to the segment a-b."""
    d = b - a
    t = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.hypot(px - (a[0] + t * d[0]), py - (a[1] + t * d[1]))


def _rotate(v: np.ndarray, degrees: float) -> np.ndarray:
    r = np.radians(degrees)
    return v @ np.array([[np.cos(r), np.sin(r)], [-np.sin(r), np.cos(r)]])


def _bone(px, py, a, b, radius, gap_a, gap_b):
    """A long bone from a to b whose rounded ends stop ``gap_a`` and ``gap_b`` short of them:
    marrow plus a bright cortical shell."""
    direction = (b - a) / np.linalg.norm(b - a)
    d = _capsule_distance(px, py, a + direction * (radius + gap_a), b - direction * (radius + gap_b))
    inside = 1 / (1 + np.exp((d - radius) / 0.6))
    cortex = np.exp(-((d - radius * 0.8) ** 2) / (2 * (0.25 * radius) ** 2))
    return 0.45 * inside + 0.4 * cortex * inside


def skeleton(rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """One deformed skeleton in template coordinates: forearm ends, rays, carpus centre."""
    rays = []
    for ray in RAYS:
        spread = rng.normal(0, 5)  # degrees, about the ray's base
        points = [ray[0]]
        for k in range(1, 4):
            segment = _rotate(ray[k] - ray[k - 1], spread + (k - 1) * rng.normal(0, 3))
            points.append(points[-1] + segment * rng.uniform(0.88, 1.12))
        rays.append(np.array(points))
    forearm = FOREARM + rng.normal(0, 1.5, size=FOREARM.shape)
    return forearm, rays, CARPUS + rng.normal(0, 1.5, size=2)


def render(rng: np.random.Generator, height: int, width: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W) float32 in [0, 1], landmarks (11, 2)) for one random hand."""
    forearm, rays, carpus = skeleton(rng)
    # Pose: rotate and scale about the canvas centre, then shift, mapped onto (height, width).
    centre = np.array([80.0, 100.0])
    angle, scale = rng.uniform(-12, 12), rng.uniform(0.85, 1.1)
    shift = rng.uniform(-10, 10, size=2)
    to_image = np.array([width / 160.0, height / 200.0])

    def place(p):
        return (_rotate(np.asarray(p) - centre, angle) * scale + centre + shift) * to_image

    forearm, carpus = place(forearm), place(carpus)
    rays = [place(r) for r in rays]
    pixel = float(scale * to_image.mean())
    py, px = np.mgrid[0:height, 0:width].astype(np.float64)

    tissue = np.zeros((height, width))
    bones = np.zeros((height, width))
    soft = rng.uniform(8, 11) * pixel
    for end in forearm:  # forearm bones run straight down off the image
        below = end + [0.0, float(height)]
        tissue = np.maximum(tissue, _capsule_distance(px, py, end, below) < soft * 1.6)
        bones += _bone(px, py, below, end, rng.uniform(5, 7) * pixel, 0, 0)
    palm = np.hypot((px - carpus[0]) / (30 * pixel), (py - carpus[1]) / (26 * pixel)) < 1
    tissue = np.maximum(tissue, palm)
    for _ in range(3):  # the carpus: a few round bones
        c = carpus + rng.normal(0, 4 * pixel, size=2)
        d = np.hypot(px - c[0], py - c[1])
        bones += 0.35 / (1 + np.exp((d - rng.uniform(5, 8) * pixel) / 0.8))
    for ray in rays:
        width_px = rng.uniform(3.5, 5) * pixel
        for k in range(3):
            tissue = np.maximum(tissue, _capsule_distance(px, py, ray[k], ray[k + 1]) < soft)
            joint = rng.uniform(0.8, 1.4) * pixel  # half the joint space
            bones += _bone(px, py, ray[k], ray[k + 1], width_px * (1 - 0.15 * k), joint, joint if k < 2 else 0)
    tissue = gaussian_filter(tissue.astype(np.float64), 2.0 * pixel) * rng.uniform(0.2, 0.35)

    gradient = rng.uniform(-0.05, 0.05) * (px / width) + rng.uniform(-0.05, 0.05) * (py / height)
    image = 0.05 + gradient + tissue + bones * rng.uniform(0.7, 1.0)
    image = gaussian_filter(image, rng.uniform(0.5, 1.0)) + rng.normal(0, noise, size=image.shape)
    image = np.clip(image, 0, None) ** rng.uniform(0.75, 1.3)
    image = (image - image.min()) / (image.max() - image.min())

    tips = [ray[3] for ray in rays]
    landmarks = np.stack([*forearm, *(r[1] for r in rays), *(r[2] for r in rays), *tips])
    return image.astype(np.float32), landmarks


class SyntheticHands(Dataset):
    """Synthetic hand radiographs: 11 landmarks, a known spacing, deterministic from a seed."""

    @dataclass
    class Params:
        seed: NonNegativeInt = 0
        n_train: PositiveInt = 150
        n_val: PositiveInt = 20
        n_test: PositiveInt = 80
        height: PositiveInt = 200
        width: PositiveInt = 160
        spacing: PositiveFloat = 0.8  # mm per pixel
        noise: NonNegativeFloat = 0.03
        n_landmarks: PositiveInt = len(LANDMARKS)  # the first n, for datasets of other landmark counts

    def __init__(self, params=None):
        super().__init__(params)
        if not 1 <= self.params.n_landmarks <= len(LANDMARKS):
            raise DataError(f"synthetic: n_landmarks must be 1 to {len(LANDMARKS)}, got {self.params.n_landmarks}")
        self.landmark_names = LANDMARKS[:self.params.n_landmarks]

    unit = "mm"
    thresholds = (2.5, 5.0, 10.0)

    def split(self, name):
        p = self.params
        bounds = {"train": (0, p.n_train), "val": (p.n_train, p.n_train + p.n_val),
                  "test": (p.n_train + p.n_val, p.n_train + p.n_val + p.n_test)}
        start, stop = bounds[name]
        return [f"{i:04d}" for i in range(start, stop)]

    def load(self, sample_id):
        p = self.params
        rng = np.random.default_rng([p.seed, int(sample_id)])
        image, landmarks = render(rng, p.height, p.width, p.noise)
        return Sample(sample_id, image, landmarks[:p.n_landmarks], p.spacing)
