"""Seconds per DDPM pre-training iteration on one process and on N (``lmbench run --nproc N``),
and how far the N-process weights are from the single process's.

    python benchmarks/data_parallel.py                  # CPU: 1 and 2 gloo processes, smoke preset
    python benchmarks/data_parallel.py --device cuda    # 1 and every GPU (NCCL)

Both runs pre-train the same network on the same synthetic images with the same seed, through
lmbench's own path (the pre-train cache and ``distributed.pretrain``); times are whole
pre-trainings divided by their iterations, process start-up included.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lmbench.config.specs import ComponentSpec
from lmbench.store import cache, tensorfile
from lmbench.train import distributed
from lmbench_plugins.synthetic.dataset import SyntheticHands


def spec(kind: str, name: str, params: dict) -> ComponentSpec:
    return ComponentSpec(kind, name, name, params, params)


def pretrain(nproc: int, images: torch.Tensor, device: str, iterations: int, batch: int, folder: Path) -> float:
    job = {"pretrainer": spec("pretrainer", "ddpm", {"iterations": iterations, "batch_size": batch, "accumulation": 1,
                                                   "lr": 1e-3, "augment": False}),
           "backbone": spec("backbone", "ddpm-unet", {"preset": "smoke"}), "images": images, "num_landmarks": 1,
           "seed": 0, "device": device, "folder": folder, "key": folder.name, "resume_every": 1e9}
    start = time.perf_counter()
    distributed.pretrain(nproc, job)
    return (time.perf_counter() - start) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--nproc", type=int, default=0, help="processes to compare with one (default: 2, or every GPU)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    nproc = args.nproc or (torch.cuda.device_count() if args.device == "cuda" else 2)
    dataset = SyntheticHands(SyntheticHands.Params(n_train=16, n_val=1, n_test=1, height=args.size, width=args.size))
    images = torch.stack([torch.from_numpy(dataset.load(i).image)[None] for i in dataset.split("train")]).float()
    table = Table(title=f"DDPM pre-training, smoke preset, {args.size} px, batch 8, {args.device}")
    for column in ("processes", "s / iteration", "speed-up", "largest weight difference to 1 process"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        weights, single = {}, None
        for n in (1, nproc):
            folder = Path(scratch) / f"nproc{n}"
            seconds = pretrain(n, images, args.device, args.iterations, 8, folder)
            weights[n] = tensorfile.load(folder / cache.weights_file(args.iterations))[0]
            single = single or seconds
            difference = max((weights[1][k] - weights[n][k]).abs().max().item() for k in weights[1])
            table.add_row(str(n), f"{seconds:.3f}", f"{single / seconds:.2f}", f"{difference:.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()
