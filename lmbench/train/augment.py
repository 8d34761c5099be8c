"""Training augmentation that moves landmarks with the image (torchvision.transforms.v2).

Small shift, scale and rotation, as the paper, with the border replicated: the image is
padded with its edge pixels before the affine warp and cropped back after, because
torchvision's keypoint warps support only constant fill.
"""

from __future__ import annotations

import math

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lmbench.config.profiles import FinetuneConfig


def augment(image: torch.Tensor, landmarks: torch.Tensor, config: FinetuneConfig, generator: torch.Generator):
    """Randomly warp one (1, S, S) image and its (N, 2) landmarks, with probability p."""
    if torch.rand((), generator=generator) >= config.augment_probability:
        return image, landmarks
    size = image.shape[-1]
    u = torch.rand(4, generator=generator) * 2 - 1  # uniform in [-1, 1)
    angle = float(u[0]) * config.max_rotation
    shift = [float(u[1]) * config.max_shift * size, float(u[2]) * config.max_shift * size]
    scale = 1 + float(u[3]) * config.max_scale
    margin = math.ceil(size * (config.max_shift + config.max_scale) + size * math.radians(config.max_rotation)) + 1

    img = F.pad(tv_tensors.Image(image), [margin], padding_mode="edge")
    pts = F.pad(tv_tensors.KeyPoints(landmarks, canvas_size=(size, size)), [margin])
    warp = dict(angle=angle, translate=shift, scale=scale, shear=[0.0, 0.0])
    img = F.affine(img, **warp, interpolation=F.InterpolationMode.BILINEAR)
    pts = F.affine(pts, **warp)
    img, pts = F.center_crop(img, [size, size]), F.center_crop(pts, [size, size])
    img = img.as_subclass(torch.Tensor)
    if config.renormalize_warped:  # albumentations' min_max after the published ShiftScaleRotate
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    return img, pts.as_subclass(torch.Tensor)


def augment_images(images: torch.Tensor, generator: torch.Generator, probability: float, max_shift: float,
                   max_rotation: float) -> torch.Tensor:
    """Randomly shift and rotate each image of a (B, C, S, S) batch with probability p, on its
    device, border replicated; each warped image is min-max normalised again, as the published
    pre-training pipeline normalises after augmenting. For images without landmarks."""
    b, device = len(images), images.device
    u = torch.rand(b, 3, generator=generator, device=device) * 2 - 1
    apply = (torch.rand(b, generator=generator, device=device) < probability).float()
    angle = torch.deg2rad(u[:, 0] * max_rotation) * apply
    shift = u[:, 1:] * (2 * max_shift) * apply[:, None]  # a fraction of the size, in [-1, 1] coordinates
    cos, sin = angle.cos(), angle.sin()
    # affine_grid maps output to input coordinates: the inverse of rotate-then-shift
    theta = torch.stack([
        torch.stack([cos, sin, -(cos * shift[:, 0] + sin * shift[:, 1])], dim=1),
        torch.stack([-sin, cos, sin * shift[:, 0] - cos * shift[:, 1]], dim=1),
    ], dim=1)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    warped = torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    low = warped.amin(dim=(1, 2, 3), keepdim=True)
    high = warped.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(apply[:, None, None, None] > 0, (warped - low) / (high - low).clamp_min(1e-12), images)
