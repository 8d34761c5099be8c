"""Reading images and annotation files, with one-line errors that name the file."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from lmbench.core.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm")
#: images larger than this are refused before decoding (a 43 cm plate at 0.1 mm is 18.5 megapixels)
DEFAULT_MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = None  # lmbench checks the size itself, from the header, with a limit one can lift


def find_image(folders: Iterable[Path], stem: str) -> Path | None:
    """The first ``<folder>/<stem><suffix>`` that exists, for any image suffix."""
    for folder in folders:
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def max_pixels() -> int:
    """The size limit of ``read_image``: ``$LMBENCH_MAX_PIXELS``, else ``DEFAULT_MAX_PIXELS``."""
    value = os.environ.get("LMBENCH_MAX_PIXELS", "")
    if not value.isdigit() or int(value) < 1:
        if value:
            raise DataError(f"$LMBENCH_MAX_PIXELS: expected a positive whole number of pixels, got {value!r}")
        return DEFAULT_MAX_PIXELS
    return int(value)


def read_image(path: Path, limit: int | None = None) -> np.ndarray:
    """A grayscale (H, W) float32 image in [0, 1], whatever the file's mode and bit depth;
    images over ``limit`` pixels (default ``max_pixels()``) are refused before decoding."""
    return read_image_and_spacing(path, limit)[0]


def read_image_and_spacing(path: Path, limit: int | None = None) -> tuple[np.ndarray, float | None]:
    """``read_image``, and the file's own pixel spacing in mm where it has one (DICOM)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        pixels, spacing = _read_dicom(path)
        return _unit_range(pixels, path), spacing
    try:
        with Image.open(path) as image:
            _check_size(image.width, image.height, limit or max_pixels(), path)
            if getattr(image, "n_frames", 1) > 1:
                raise DataError(f"{path}: image holds {image.n_frames} frames; one grayscale frame is expected")
            image.load()
            pixels = _grayscale(image, path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for unreadable or truncated files
        raise DataError(f"{path}: unreadable image ({exc})") from None
    return _unit_range(pixels, path), None


#: the smallest side an image may have: a landmark needs pixels around it to be found
MIN_SIDE = 16


def _check_size(width: int, height: int, limit: int, path: Path) -> None:
    if min(width, height) < MIN_SIDE:
        raise DataError(f"{path}: a {width}x{height} image; landmark images need at least {MIN_SIDE} pixels a side")
    if width * height > limit:
        raise DataError(f"{path}: {width}x{height} image is {width * height / 1e6:.0f} megapixels, over the limit of "
                        f"{limit / 1e6:g}; raise it with --max-pixels or $LMBENCH_MAX_PIXELS")


def _grayscale(image: Image.Image, path: Path) -> np.ndarray:
    """The pixels of any PIL mode as one channel: gray and 16-bit as they are, colour as the
    mean of R, G and B (CMYK, palette and YCbCr converted to RGB first); an alpha channel must
    be opaque, as lmbench would otherwise have to invent what lies behind it."""
    if "A" in image.getbands() or "transparency" in image.info:  # an alpha band, or a PNG's tRNS colour
        with_alpha = image if "A" in image.getbands() else image.convert("LA" if image.mode in ("1", "L") else "RGBA")
        alpha = np.asarray(with_alpha.getchannel("A"))
        if alpha.min() < alpha.max() or alpha.min() == 0:
            raise DataError(f"{path}: image has transparent pixels (mode {image.mode}"
                            f"{', a transparent colour' if with_alpha is not image else ''}); save it without alpha")
        if with_alpha is image:
            image = image.convert("L" if image.mode in ("LA", "La") else "RGB")
    if image.mode in ("1", "L", "I", "F") or image.mode.startswith("I;16"):
        return np.asarray(image.convert("L") if image.mode == "1" else image)
    if image.mode != "RGB":
        image = image.convert("RGB")  # CMYK, P, YCbCr, LAB, HSV
    return np.asarray(image)


def image_shape(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, from its header alone."""
    try:
        if path.suffix.lower() == ".dcm":
            header = _dicom().dcmread(path, stop_before_pixels=True)
            return int(header.Rows), int(header.Columns)
        with Image.open(path) as image:
            return image.height, image.width
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except (OSError, ValueError, SyntaxError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def _dicom():
    try:
        import pydicom
    except ImportError:
        raise DataError("DICOM images need pydicom: pip install 'lmbench[dicom]'") from None
    return pydicom


def _read_dicom(path: Path) -> tuple[np.ndarray, float | None]:
    """Pixels (MONOCHROME1 inverted, so that bone is bright) and the spacing from PixelSpacing
    (or ImagerPixelSpacing), which must be the same along both axes."""
    pydicom = _dicom()
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except Exception as exc:  # pydicom raises many kinds for broken files
        raise DataError(f"{path}: unreadable DICOM ({type(exc).__name__}: {exc})") from None
    if pixels.ndim != 2:
        raise DataError(f"{path}: DICOM holds {pixels.ndim}-d pixels; one grayscale frame is expected")
    _check_size(pixels.shape[1], pixels.shape[0], max_pixels(), path)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    pixels = (pixels - pixels.min()) / max(float(pixels.max() - pixels.min()), 1e-12)
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is None:
        return pixels, None
    row, column = (float(v) for v in spacing)
    if abs(row - column) > 1e-6 * max(row, column):
        raise DataError(f"{path}: pixel spacing {row} x {column} mm differs between axes; lmbench needs square pixels")
    return pixels, row


def _unit_range(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Grayscale float32 in [0, 1]: 8- and 16-bit by their full range, other depths min-max."""
    if pixels.ndim == 3:
        pixels = pixels[..., :3].mean(axis=-1)
    if pixels.dtype in (np.uint8, np.uint16):
        pixels = pixels / np.iinfo(pixels.dtype).max
    elif pixels.dtype == np.int32 and pixels.size and pixels.min() >= 0 and pixels.max() <= 65535:
        pixels = pixels / 65535  # PIL's mode I holding a 16-bit image
    pixels = pixels.astype(np.float32)  # other depths are min-max scaled below
    if pixels.size == 0 or not np.isfinite(pixels).all():
        raise DataError(f"{path}: image is empty or holds non-finite values")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 1:
        pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    return pixels


_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def read_text_file(path: Path, what: str = "annotation file") -> str:
    """A text file's contents: UTF-8, or UTF-8 or UTF-16 with a byte-order mark (what
    spreadsheet programs save), the mark stripped; any other encoding is refused in one line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} is missing") from None
    except OSError as exc:
        raise DataError(f"{path}: unreadable {what} ({exc.strerror})") from None
    encoding = next((name for mark, name in _BOMS if data.startswith(mark)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {what} is not {encoding.upper().removesuffix('-SIG')} text (byte "
                        f"0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8") from None


def parse_number(text: str, path: Path, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: {where}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: {where}: coordinate is {text.strip()}")
    return value


def read_point_lines(path: Path, count: int, separator: str | None = ",", skip: int = 0) -> np.ndarray:
    """(count, 2) points from the first ``count`` lines after ``skip`` of a text file of
    ``x<sep>y`` lines. Lines after them (such as class labels) are ignored."""
    lines = [line for line in read_text_file(path).splitlines()[skip:] if line.strip()]
    if len(lines) < count:
        raise DataError(f"{path}: expected {count} points, found {len(lines)} lines")
    points = np.zeros((count, 2))
    for i, line in enumerate(lines[:count]):
        parts = line.split(separator)
        if len(parts) < 2:
            raise DataError(f"{path}: line {i + 1 + skip}: expected 'x{separator or ' '}y', got {line.strip()!r}")
        points[i] = [parse_number(p, path, f"line {i + 1 + skip}") for p in parts[:2]]
    return points


def outside_image(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N,) mask of the points lying outside an image of ``shape`` (H, W) by more than half a pixel."""
    height, width = shape
    return (points[:, 0] < -0.5) | (points[:, 0] > width - 0.5) | (points[:, 1] < -0.5) | (points[:, 1] > height - 0.5)


def check_inside(points: np.ndarray, shape: tuple[int, int], path: Path) -> None:
    """Raise if any point lies outside an image of ``shape`` (H, W), by more than half a pixel."""
    height, width = shape
    outside = outside_image(points, shape)
    if outside.any():
        i = int(np.argmax(outside))
        raise DataError(
            f"{path}: landmark {i} at ({points[i, 0]:g}, {points[i, 1]:g}) lies outside the {width}x{height} image"
        )
