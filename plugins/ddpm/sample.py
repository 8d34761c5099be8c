"""``lmbench ddpm-sample``: draw images from a pre-trained DDPM, to see that it learned x-rays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from PIL import Image

from lmbench.api import LmbenchError, default_cache_dir


def sample_images(folder: Path, checkpoint: int | None, count: int, steps: int, seed: int) -> np.ndarray:
    """(count, S, S) images in [0, 1] from the cached run in ``folder``, by DDIM in ``steps`` steps."""
    # imported here: every ``lmbench`` command registers this one, and should start without torch
    import torch
    from diffusers import DDIMScheduler

    from lmbench.api import read_weights
    from lmbench_plugins.ddpm.backbone import DdpmUNet, predict_noise

    identity = json.loads((folder / "identity.json").read_text())
    if identity["pretrainer"]["name"] != "ddpm":
        raise LmbenchError(f"{folder}: not a ddpm pre-training")
    pretrainer = identity["pretrainer"]["params"]
    checkpoint = checkpoint or max(pretrainer["checkpoints"])
    path = folder / f"checkpoint-{checkpoint}.safetensors"
    if not path.exists():
        raise LmbenchError(f"{path}: no such checkpoint; this run has {pretrainer['checkpoints']}")
    backbone = DdpmUNet(DdpmUNet.Params(**identity["backbone"]["params"]))
    size = identity["image_size"]
    unet = backbone.build_unet(size)
    weights = read_weights(path)
    unet.load_state_dict({k.removeprefix("unet."): v for k, v in weights.items()})
    unet.eval()
    scheduler = DDIMScheduler(
        num_train_timesteps=pretrainer["timesteps"], beta_start=pretrainer["beta_start"],
        beta_end=pretrainer["beta_end"], beta_schedule="linear", clip_sample=False,
    )
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((count, 1, size, size), generator=generator)
    condition = backbone.config()["self_condition"]
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = torch.cat([torch.zeros_like(x), x], dim=1) if condition else x
            eps = predict_noise(unet, model_input, t.expand(count))
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
    if backbone.config()["input_range"] == "symmetric":
        x = (x + 1) / 2
    return x[:, 0].clamp(0, 1).numpy()


def save_grid(images: np.ndarray, path: Path, columns: int = 4) -> None:
    count, size = images.shape[0], images.shape[-1]
    rows = -(-count // columns)
    grid = np.zeros((rows * size, columns * size), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * size:(r + 1) * size, c * size:(c + 1) * size] = (image * 255).round().astype(np.uint8)
    Image.fromarray(grid).save(path)


def sample_command(
    pretraining: Annotated[str, typer.Argument(help="A pre-training's cache folder, or its pretrain_key.")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("ddpm-samples.png"),
    checkpoint: Annotated[Optional[int], typer.Option(help="Iteration to sample from (default: the last).")] = None,
    count: int = 8,
    steps: Annotated[int, typer.Option(help="DDIM sampling steps.")] = 50,
    seed: int = 0,
):
    """Sample a grid of images from a pre-trained DDPM."""
    folder = Path(pretraining)
    if not folder.is_dir():
        folder = default_cache_dir() / "pretrain" / pretraining
    if not (folder / "identity.json").exists():
        raise LmbenchError(f"{folder}: no finished pre-training here")
    save_grid(sample_images(folder, checkpoint, count, steps, seed), out)
    typer.echo(f"wrote {count} samples to {out}")
