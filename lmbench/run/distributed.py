"""One pre-training over N processes of this machine: ``lmbench run --nproc N``.

Each process draws the same global batch and random numbers (images, noise, timesteps) as a
single process would, computes the loss on its equal share (``PretrainContext.shard``), and
torch's ``DistributedDataParallel`` averages the gradients (NCCL on GPUs, one per process;
gloo on CPUs), so the weights follow the single-process run's within float rounding.
Process 0 writes the checkpoints, the curve and the resume state into the cache entry.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from lmbench.core.interfaces import PretrainContext
from lmbench.run import cache, results, tensorfile

FINAL = f"final{tensorfile.SUFFIX}"  # a pretrainer's returned weights, when it keeps no checkpoints


def _worker(rank: int, world: int, rendezvous: str, job: dict) -> None:
    cuda = job["device"] == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)
    try:
        if cuda:
            torch.cuda.set_device(rank)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        folder: Path = job["folder"]
        pretrainer, backbone = job["pretrainer"].instantiate(), job["backbone"].instantiate()
        curve: list[dict] = []
        lead = rank == 0
        context = PretrainContext(
            images=job["images"], backbone=backbone, num_landmarks=job["num_landmarks"], seed=job["seed"],
            device=torch.device("cuda", rank) if cuda else torch.device("cpu"), progress=lambda done, total: None,
            save_checkpoint=(lambda step, w: tensorfile.save(folder / cache.weights_file(step), w)) if lead
            else (lambda step, w: None),
            record_loss=lambda step, loss, chance: curve.append({"step": step, "loss": loss, "chance": chance}),
            resume_path=folder / cache.RESUME, resume_every=job["resume_every"], rank=rank, world_size=world,
        )
        weights = pretrainer.pretrain(context)
        if lead:
            results.write_pretrain_curve(job["key"], curve, folder / results.PRETRAIN_CURVE)
            if weights is not None:
                tensorfile.save(folder / FINAL, weights)
    finally:
        dist.destroy_process_group()


def pretrain(nproc: int, job: dict) -> dict[str, torch.Tensor] | None:
    """Run ``job`` (the specs and inputs of one pre-training) on ``nproc`` processes; the
    weights it returned, if it returned any (its checkpoints are in ``job["folder"]``)."""
    job["folder"].mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        torch.multiprocessing.start_processes(
            _worker, args=(nproc, os.path.join(scratch, "rendezvous"), job), nprocs=nproc, start_method="spawn")
    final = job["folder"] / FINAL
    if not final.exists():
        return None
    weights = tensorfile.load(final)[0]
    final.unlink()
    return weights
