"""Training throughput (images/s) and peak memory of the networks lmbench trains.

    python benchmarks/throughput.py                  # CPU: the smoke and quick presets
    python benchmarks/throughput.py --device cuda    # adds the 256 px rows: published and paper-text U-Nets

Rows: DDPM pre-training steps (augmentation, noise prediction, AdamW, EMA) and fine-tuning
steps (Gaussian head) of the DDPM U-Net per preset, and fine-tuning steps of the smp U-Net per
profile. On CUDA the published U-Net (558.5M parameters) is also run as the authors' code runs
it (fp32, gradient checkpointing, batch 4 x 8, a full checkpoint written after every step), so
the fast path's speed-up on the same network is a ratio measured in one run; the last column
gives the ratio to the 7.0 images/s the authors' code reaches on an H200. The fast path takes
the largest batch that fits (32, else 16 x 2, else 8 x 4: 32 images per iteration each time).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from rich.console import Console
from rich.table import Table
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lmbench.train.augment import augment_images
from lmbench.train.engine import autocast
from lmbench_plugins.ddpm.backbone import DdpmUNet
from lmbench_plugins.ddpm.pretrainer import noise_prediction_loss
from lmbench_plugins.gaussian.head import GaussianHead
from lmbench_plugins.smp_unet.backbone import SmpUnet

PUBLISHED_H200_IMAGES_PER_S = 7.0  # the authors' code, fp32 with gradient checkpointing (REFERENCE)


@dataclass
class Case:
    name: str
    size: int
    batch: int
    fast: bool  # bf16 autocast + TF32 on CUDA; fp32 otherwise
    make: Callable[[], tuple[torch.nn.Module, Callable]]  # -> (model, step(images, device))
    accumulation: int = 1  # batches per optimiser step
    reference: bool = False


def ddpm_pretrain(preset: str, size: int, checkpointing: bool = False, accumulation: int = 1, compile: bool = False,
                  save_every_step: bool = False):
    def make():
        backbone = DdpmUNet(DdpmUNet.Params(preset=preset))
        unet = backbone.build_unet(size)
        if checkpointing:
            unet.gradient_checkpointing = True
        network = torch.compile(unet) if compile else unet
        prepare = backbone.input_adapter()
        ema = AveragedModel(unet, multi_avg_fn=get_ema_multi_avg_fn(0.995))
        optimiser = torch.optim.AdamW(unet.parameters(), lr=1e-4)
        scheduler = DDPMScheduler(num_train_timesteps=500, beta_schedule="linear")
        generator = None  # made on the device of the first batch
        checkpoint = Path(tempfile.gettempdir()) / "lmbench-throughput-checkpoint.pt"

        def step(images, device):
            nonlocal generator
            scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
            generator = generator or torch.Generator(device=device).manual_seed(0)
            precision = "fp32" if checkpointing else "bf16"  # the as-published row runs fp32
            for _ in range(accumulation):
                batch = augment_images(images, generator, 0.5, 0.02, 2.0)
                with autocast(device, precision):
                    loss = noise_prediction_loss(network, prepare(batch), scheduler, 1, generator)
                loss.backward()
            torch.nn.utils.clip_grad_value_(unet.parameters(), 1.0)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            ema.update_parameters(unet)
            if save_every_step:  # as the published code: model, optimiser and EMA after every step
                torch.save({"model": unet.state_dict(), "optimiser": optimiser.state_dict(),
                            "ema": ema.module.state_dict()}, checkpoint)

        return unet, step

    return make


def finetune(backbone, size: int, landmarks: int = 19):
    def make():
        model = backbone.build(landmarks, size)
        head = GaussianHead(GaussianHead.Params(sigma=5.0 * size / 256))
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(images, device):
            points = torch.rand(len(images), landmarks, 2, device=device) * (size - 1)
            with autocast(device):
                logits = model(images)
            loss = head.loss(logits.float(), head.targets(points, (size, size)))
            loss.backward()
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)

        return model, step

    return make


def cases(heavy: bool, compile: bool) -> list[Case | list[Case]]:
    """Rows to measure; a list is one row: the first of its cases that fits in memory."""
    rows: list[Case | list[Case]] = []
    if heavy:  # 32 images per optimiser step in each of the published U-Net's rows
        rows.append(Case("ddpm pre-train, published, as published (fp32, checkpointing, saves)", 256, 4, False,
                         ddpm_pretrain("published", 256, checkpointing=True, accumulation=8, save_every_step=True),
                         8, reference=True))
        for name, kwargs in [("fast path", {}), ("fast path + torch.compile", {"compile": True})][:1 + compile]:
            rows.append([Case(f"ddpm pre-train, published, {name}", 256, 32 // k, True,
                              ddpm_pretrain("published", 256, accumulation=k, **kwargs), k) for k in (1, 2, 4)])
        rows.append(Case("ddpm pre-train, paper-text preset, fast path", 256, 32, True,
                         ddpm_pretrain("paper-text", 256)))
    for preset, size in [("smoke", 64), ("quick", 128)] + ([("published", 256)] if heavy else []):
        if size < 256:
            rows.append(Case(f"ddpm pre-train, {preset} preset", size, 8, True, ddpm_pretrain(preset, size)))
        backbone = DdpmUNet(DdpmUNet.Params(preset=preset))
        rows.append(Case(f"ddpm-unet fine-tune, {preset} preset", size, 4 if size < 256 else 2, True,
                         finetune(backbone, size)))
    for profile, size in [("smoke", 64), ("quick", 128)] + ([("paper", 256)] if heavy else []):
        params = SmpUnet.Params(**SmpUnet.profile_defaults.get(profile, {}))
        rows.append(Case(f"smp-unet fine-tune, {profile} ({params.encoder})", size, 4, True, finetune(SmpUnet(params), size)))
    return rows


def measure(case: Case, device: torch.device, steps: int, warmup: int) -> tuple[float, float, int]:
    """(images/s, peak memory in MiB, parameters) over ``steps`` timed steps."""
    torch.manual_seed(0)
    model, step = case.make()
    model.to(device).train()
    parameters = sum(p.numel() for p in model.parameters())
    images = torch.rand(case.batch, 1, case.size, case.size, device=device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = case.fast
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step(images, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(images, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak so far
    return case.batch * case.accumulation * steps / (time.perf_counter() - start), peak, parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default: 20 on CUDA, 3 on CPU)")
    parser.add_argument("--heavy", action="store_true", help="256 px rows on a CPU too (minutes per step)")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row (about two minutes to compile)")
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = args.steps or (20 if device.type == "cuda" else 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    table = Table(title=f"lmbench training throughput on {name} (torch {torch.__version__})")
    columns = ("step", "px", "batch", "precision", "params (M)", "images/s", "peak MiB", "vs as-published row",
               f"vs {PUBLISHED_H200_IMAGES_PER_S} img/s", "h per 1k iterations")
    for column in columns:
        table.add_column(column, justify="left" if column == "step" else "right")
    reference = None
    for row in cases(heavy=args.heavy or device.type == "cuda", compile=args.compile):
        for case in row if isinstance(row, list) else [row]:
            precision = "bf16" if case.fast and device.type == "cuda" else "fp32"
            batch = f"{case.batch}x{case.accumulation}" if case.accumulation > 1 else str(case.batch)
            try:
                rate, peak, parameters = measure(case, device, steps, warmup=3 if device.type == "cuda" else 1)
                break
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
        else:
            table.add_row(case.name, str(case.size), batch, precision, "", "out of memory", "", "", "", "")
            continue
        reference = rate if case.reference else reference
        pretraining = "ddpm pre-train" in case.name and case.size == 256
        ratio = f"{rate / reference:.1f}x" if reference and pretraining else ""
        quoted = f"{rate / PUBLISHED_H200_IMAGES_PER_S:.1f}x" if pretraining and device.type == "cuda" else ""
        hours = f"{32 * 1000 / rate / 3600:.2f}" if pretraining else ""  # 32 images per iteration
        table.add_row(case.name, str(case.size), batch, precision,
                      f"{parameters / 1e6:.1f}", f"{rate:.1f}", f"{peak:.0f}", ratio, quoted, hours)
        Console().print(f"{case.name}: {rate:.1f} images/s", highlight=False)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
