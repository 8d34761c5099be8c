"""An exported detector (``lmbench export``) put to use without PyTorch: onnxruntime and numpy.

    from lmbench.deploy import OnnxDetector

    detector = OnnxDetector("detector.onnx")
    points = detector.landmarks(image)  # (N, 2): x, y in the image's own pixels
    dict(zip(detector.landmark_names, points))

``image`` is one grayscale x-ray as a (H, W) array at its own size, any dtype and intensity
range: the graph resizes it to the network's square input (bilinear with antialiasing, aspect
ignored) and scales it to [0, 1] by its minimum and maximum, as lmbench does before every
prediction. The graph's output is the network's heatmap logits (B, N, S, S); the published
landmark decoding (the largest contour of each thresholded heatmap) has no ONNX operator, so
every head's decoding runs here, in numpy, by the rule the model's metadata names.

This module imports nothing from lmbench or PyTorch: a deployment can copy this one file,
with numpy, onnxruntime, and OpenCV or SciPy for the Gaussian head's two rules
(``pip install 'lmbench[deploy]'`` brings them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

METADATA_KEY = "lmbench"  # the ONNX metadata entry holding the JSON below


def largest_contour_centroid(logits: np.ndarray) -> tuple[float, float]:
    """(x, y) moment centroid of the largest external contour of ``logits >= max / 2``, or (0, 0)."""
    import cv2

    mask = (logits >= 0.5 * logits.max()).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0, 0.0
    moments = cv2.moments(max(contours, key=cv2.contourArea))
    if moments["m00"] == 0:
        return 0.0, 0.0
    return moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]


def largest_region_centroid(heatmap: np.ndarray) -> tuple[float, float]:
    """(x, y) centroid of the largest 4-connected region above half the map's maximum."""
    from scipy import ndimage

    regions, count = ndimage.label(heatmap > 0.5 * heatmap.max())
    if count == 0:  # a constant map: no peak to find
        return (heatmap.shape[1] - 1) / 2, (heatmap.shape[0] - 1) / 2
    sizes = np.bincount(regions.ravel())[1:]
    y, x = np.nonzero(regions == np.argmax(sizes) + 1)
    return float(x.mean()), float(y.mean())


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def argmax_points(logits: np.ndarray, subpixel: bool = False, temperatures=None) -> np.ndarray:
    """(B, N, H, W) -> (B, N, 2): each map's argmax, refined with ``subpixel`` by the
    probability-weighted mean offset of its 3 x 3 neighbourhood (the map's softmax over all
    pixels, each landmark's logits divided by its ``temperatures`` where given)."""
    batch, channels, height, width = logits.shape
    flat = logits.reshape(batch, channels, -1).astype(np.float64)
    index = flat.argmax(-1)
    points = np.stack([index % width, index // width], axis=-1).astype(np.float64)
    if not subpixel:
        return points
    if temperatures is not None:
        flat = flat / np.asarray(temperatures, dtype=np.float64)[None, :, None]
    padded = np.pad(_softmax(flat, -1).reshape(logits.shape), ((0, 0), (0, 0), (1, 1), (1, 1)))
    offsets = np.array([-1.0, 0.0, 1.0])
    for b in range(batch):
        for c in range(channels):
            x, y = int(points[b, c, 0]), int(points[b, c, 1])
            window = padded[b, c, y:y + 3, x:x + 3]
            mass = max(window.sum(), 1e-12)
            points[b, c] += [(window.sum(0) * offsets).sum() / mass, (window.sum(1) * offsets).sum() / mass]
    return points


def decode(logits: np.ndarray, decoding: dict) -> np.ndarray:
    """(B, N, S, S) logits -> (B, N, 2) landmarks in network-input pixels, by ``decoding``:
    {"rule": "contour"} each map's largest contour above half its maximum (the published rule);
    {"rule": "region"} the largest region above half the maximum of the softmax across
    landmarks; {"rule": "argmax", "subpixel": bool, "temperatures": [...] or null}."""
    rule = decoding["rule"]
    if rule == "argmax":
        return argmax_points(logits, decoding.get("subpixel", False), decoding.get("temperatures"))
    if rule == "contour":
        maps, centroid = logits, largest_contour_centroid
    elif rule == "region":
        maps, centroid = _softmax(logits.astype(np.float64), 1).astype(np.float32), largest_region_centroid
    else:
        raise ValueError(f"unknown decoding rule {rule!r}")
    return np.array([[centroid(channel) for channel in image] for image in maps], dtype=np.float64)


def to_original(points: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """Input-pixel points (..., 2) -> pixels of the original image of ``shape`` (H, W); pixel
    centres at integers on both sides."""
    scale = np.array([shape[1] / size, shape[0] / size])
    return (points + 0.5) * scale - 0.5


class OnnxDetector:
    """An ``lmbench export`` file in an onnxruntime session, with what its metadata says:
    ``landmark_names``, ``input_size``, ``decoding`` and the run it came from (``run``)."""

    def __init__(self, path: str | Path, providers: list[str] | None = None):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in metadata:
            raise ValueError(f"{path}: not an lmbench export (no {METADATA_KEY!r} metadata)")
        self.metadata = json.loads(metadata[METADATA_KEY])
        self.landmark_names: list[str] = self.metadata["landmark_names"]
        self.input_size: int = self.metadata["input_size"]
        self.decoding: dict = self.metadata["decoding"]
        self.run: dict = self.metadata["run"]

    def logits(self, image: np.ndarray) -> np.ndarray:
        """(H, W) image -> (1, N, S, S) heatmap logits."""
        pixels = np.ascontiguousarray(image, dtype=np.float32)[None, None]
        return self.session.run(None, {"image": pixels})[0]

    def landmarks(self, image: np.ndarray) -> np.ndarray:
        """(H, W) image -> (N, 2) landmarks, (x, y) in its pixels."""
        points = decode(self.logits(image), self.decoding)[0]
        return to_original(points, image.shape[:2], self.input_size)
