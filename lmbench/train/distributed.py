"""One pre-training over N processes per node: ``lmbench run --nproc N``, started by torch's
launcher (torchrun) on this machine or, in a SLURM job of several nodes, on each of them.

Each process draws the same global batch and random numbers (images, noise, timesteps) as a
single process would, computes the loss on its equal share (``PretrainContext.shard``), and
torch's ``DistributedDataParallel`` averages the gradients (NCCL on GPUs, one per process;
gloo on CPUs), so the weights follow the single-process run's within float rounding.
Batch norms normalise over the global batch: torch's ``SyncBatchNorm`` on GPUs and, on CPUs
(where torch's has no kernels), ``GlobalBatchNorm``. Process 0 writes the checkpoints, the
curve and the resume state into the cache entry.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import _functional_collectives as collective
from torch.nn.parallel import DistributedDataParallel

from lmbench.config.specs import ComponentSpec
from lmbench.core.errors import LmbenchError, one_line
from lmbench.core.interfaces import PretrainContext
from lmbench.store import cache, results, tensorfile

FINAL = f"final{tensorfile.SUFFIX}"  # a pretrainer's returned weights, when it keeps no checkpoints


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, every process's
    share of it: the CPU counterpart of torch's ``SyncBatchNorm``, through torch's
    differentiable all-reduce, so gradients flow back to every process's inputs."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a batch of at least 2 dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1] * dist.get_world_size()
        mean = collective.all_reduce(x.sum(dims), "sum", dist.group.WORLD) / count
        centred = x - mean.view(shape)
        var = collective.all_reduce(centred.pow(2).sum(dims), "sum", dist.group.WORLD) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / max(count - 1, 1), momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batch_norms(module: nn.Module, device: torch.device) -> nn.Module:
    """Every batch norm below ``module`` made to normalise over the global batch, in place,
    with the same parameters and statistics (so an optimiser built before still applies)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                norm = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
                norm.weight, norm.bias = child.weight, child.bias
                norm.running_mean, norm.running_var = child.running_mean, child.running_var
                norm.num_batches_tracked = child.num_batches_tracked
                setattr(parent, name, norm.train(child.training))
    return module


def data_parallel(module: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``module`` with global batch norms, inside DistributedDataParallel (``PretrainContext.parallel``)."""
    return DistributedDataParallel(sync_batch_norms(module, device))


JOB = f"data-parallel-job{tensorfile.SUFFIX}"  # the pre-training's inputs, for every process to read


def launch_command(nproc: int, nodes: int, job_file: Path, host: str = "", port: int = 0) -> list[str]:
    """torchrun (``torch.distributed.run``) over ``nproc`` processes on this machine or, from
    the first node of a SLURM allocation, on each of its ``nodes`` (one srun task per node,
    meeting at ``host:port``)."""
    worker = ["-m", "lmbench.train.distributed", str(job_file)]
    if nodes == 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *worker]
    return ["srun", "--overlap", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={host}:{port}", f"--rdzv-id={job_file.parent.name}", *worker]


def pretrain(nproc: int, job: dict, nodes: int = 1) -> dict[str, torch.Tensor] | None:
    """Run ``job`` (the specs and inputs of one pre-training) on ``nproc`` processes per node;
    the weights it returned, if it returned any (its checkpoints are in ``job["folder"]``)."""
    folder: Path = job["folder"]
    job_file = folder / JOB
    meta = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in job.items() if k != "images"}
    tensorfile.save(job_file, {"images": job["images"]}, {**meta, "folder": str(folder)})
    for stale in [folder / FINAL, *folder.glob("error-*.txt")]:
        stale.unlink(missing_ok=True)
    host, port = "", 0
    if nodes > 1:  # the nodes meet at a free port of this one
        with socket.socket() as probe:
            probe.bind(("", 0))
            host, port = socket.gethostname(), probe.getsockname()[1]
    # stderr stays the user's: the processes' warnings (a resumed pre-training says so) show
    launched = subprocess.run(launch_command(nproc, nodes, job_file, host, port), stdout=subprocess.DEVNULL)
    job_file.unlink(missing_ok=True)
    if launched.returncode != 0:
        errors = sorted(folder.glob("error-*.txt"))
        said = errors[0].read_text() if errors else f"torchrun exited with status {launched.returncode}"
        raise LmbenchError(f"data-parallel pre-training over {nodes * nproc} processes failed: {said}")
    final = folder / FINAL
    if not final.exists():
        return None
    weights = tensorfile.load(final)[0]
    final.unlink()
    return weights


def _worker(job_file: Path) -> None:
    """One process of a data-parallel pre-training, as torchrun starts it (its environment
    names its rank, the world size and where the processes meet)."""
    tensors, job = tensorfile.load(job_file)
    rank, world, local = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    folder = Path(job["folder"])
    cuda = job["device"] == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        if cuda:
            torch.cuda.set_device(local)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
        pretrainer, backbone = (ComponentSpec(**job[kind]).instantiate() for kind in ("pretrainer", "backbone"))
        curve: list[dict] = []
        lead = rank == 0
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        context = PretrainContext(
            images=tensors["images"], backbone=backbone, num_landmarks=job["num_landmarks"], seed=job["seed"],
            device=device, progress=lambda done, total: None,
            save_checkpoint=(lambda step, w: tensorfile.save(folder / cache.weights_file(step), w)) if lead
            else (lambda step, w: None),
            record_loss=lambda step, loss, chance: curve.append({"step": step, "loss": loss, "chance": chance}),
            resume_path=folder / cache.RESUME, resume_every=job["resume_every"], rank=rank, world_size=world,
            data_parallel=lambda module: data_parallel(module, device),
        )
        weights = pretrainer.pretrain(context)
        if lead:
            results.write_pretrain_curve(job["key"], curve, folder / results.PRETRAIN_CURVE)
            if weights is not None:
                tensorfile.save(folder / FINAL, weights)
    except Exception as exc:  # the first line the launching process reports

        (folder / f"error-{rank}.txt").write_text(one_line(exc))
        raise
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
