"""The GPU check: one table from a lent GPU in under 10 minutes, from a copy of the work tree.

    python benchmarks/gpu_check.py --prepare --data-root ../shared/data   # here, once: ISBI at 256 px, 33 MiB
    python benchmarks/gpu_check.py                                        # on the GPU, with gpu-check/ beside it
    python benchmarks/gpu_check.py --tiny                                 # any CPU, seconds: the same code, tiny

Rows:
1. training throughput of the published DDPM U-Net (558.5M parameters, 256 px), as the
   authors' code runs it (fp32, gradient checkpointing, a checkpoint written every step)
   and on lmbench's fast path, on the same card (``throughput.py``'s rows): their ratio,
   and against the 7.0 images/s the authors' code reaches on an H200;
2. a paper-profile DDPM row at 1 label on ISBI 2015 (test images 301-400), through
   lmbench's own path (``run_matrix``), its pre-training SHORTENED to ``--iterations``
   (the paper's is 8,000): its test MRE, health verdict, and the cost per 1,000 iterations.

``--prepare`` decodes ISBI 2015 at 256 px into ``gpu-check/cache`` (lmbench's decoded-data
cache, float16) under a data root that exists on both machines (``/tmp/lmbench-gpu-check``,
empty on the GPU machine: the runs read the cache, never the images). Carry ``gpu-check``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (the rows it measures, one module)

from lmbench.config.matrix import load_matrix  # noqa: E402
from lmbench.run.schedule import run_matrix  # noqa: E402
from lmbench.store import results  # noqa: E402

HERE = Path(__file__).resolve().parent.parent / "gpu-check"
DATA_ROOT = Path("/tmp/lmbench-gpu-check")  # the same string on both machines: it is part of the cache key
PAPER_ITERATIONS = 8000

ROW = """
name = "gpu-check"
profile = "{profile}"
image_size = {size}
labels = [1]
seeds = [0]
output = "{output}"
cache_dir = "{cache}"
{finetune}
[[datasets]]
name = "{dataset}"
params = {dataset_params}

[[pretrainers]]
name = "ddpm"
params = {{ iterations = {iterations} }}

[[backbones]]
name = "ddpm-unet"
{backbone}
[[heads]]
name = "gaussian"
"""


def matrix_text(tiny: bool, iterations: int, output: Path, cache: Path) -> str:
    if tiny:  # the smoke network on generated hands at 32 px: the same path in seconds
        return ROW.format(profile="smoke", size=32, output=output, cache=cache, iterations=iterations,
                          finetune="[finetune]\nepochs = 2\nsamples_per_epoch = 4\n", dataset="synthetic",
                          dataset_params="{ n_train = 8, n_val = 2, n_test = 4 }",
                          backbone='params = { preset = "smoke" }\n')
    return ROW.format(profile="paper", size=256, output=output, cache=cache, iterations=iterations, finetune="",
                      dataset="isbi2015", dataset_params=f'{{ root = "{DATA_ROOT / "isbi2015"}", split = "test2" }}',
                      backbone="")


def throughput_rows(tiny: bool, device: torch.device, steps: int) -> list[tuple]:
    """(name, batch, images/s, peak MiB) of the as-published and the fast-path rows."""
    if tiny:
        rows = [throughput.Case("ddpm pre-train, smoke, as published (fp32, checkpointing, saves)", 32, 2, False,
                                throughput.ddpm_pretrain("smoke", 32, checkpointing=True, accumulation=2,
                                                         save_every_step=True), 2, reference=True),
                [throughput.Case("ddpm pre-train, smoke, fast path", 32, 4, True, throughput.ddpm_pretrain("smoke", 32))]]
    else:
        rows = [row for row in throughput.cases(heavy=True, compile=False)
                if "published" in (row[0] if isinstance(row, list) else row).name][:2]
    measured = []
    for row in rows:
        for case in row if isinstance(row, list) else [row]:  # a list: the first batch that fits
            try:
                rate, peak, _ = throughput.measure(case, device, steps, warmup=1 if tiny else 3)
                break
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
        else:
            measured.append((case.name, "", None, None))
            continue
        batch = f"{case.batch}x{case.accumulation}" if case.accumulation > 1 else str(case.batch)
        measured.append((case.name, batch, rate, peak))
        Console().print(f"{case.name}: {rate:.1f} images/s", highlight=False)
    return measured


def shortened_row(tiny: bool, iterations: int, output: Path, cache: Path) -> dict:
    """The DDPM row's run row, after running it through ``run_matrix``."""
    if not tiny:  # the data root the cache was keyed with: empty here, the images stay behind
        (DATA_ROOT / "isbi2015").mkdir(parents=True, exist_ok=True)
    matrix = load_matrix_text(matrix_text(tiny, iterations, output, cache), output)
    run_matrix(matrix, rerun="all", quiet=True)
    (row,) = results.read_runs([matrix.results_dir])
    return row


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", action="store_true", help="decode ISBI at 256 px into gpu-check/cache and stop")
    parser.add_argument("--data-root", type=Path, help="with --prepare: the folder holding isbi2015/")
    parser.add_argument("--tiny", action="store_true", help="a 32 px smoke version on any CPU (the tests run it)")
    parser.add_argument("--iterations", type=int, default=None, help="DDPM pre-training iterations (default 150; tiny 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed throughput steps per row (default 10; tiny 1)")
    parser.add_argument("--out", type=Path, default=HERE, help="where the cache and results go (default gpu-check/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache, output = args.out / "cache", args.out / "results"
    if args.prepare:
        from lmbench.data.decoded import DataCache

        if args.data_root is None:
            parser.error("--prepare needs --data-root (the folder holding isbi2015/)")
        DATA_ROOT.mkdir(parents=True, exist_ok=True)
        link = DATA_ROOT / "isbi2015"
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to((args.data_root / "isbi2015").resolve())
        spec = load_matrix_text(matrix_text(False, 1, output, cache), args.out).runs[0].dataset
        DataCache(cache).get(spec, 256)
        size = sum(p.stat().st_size for p in (cache / "data").iterdir()) / 2**20
        print(f"{cache / 'data'}: {size:.1f} MiB; carry {args.out} to the GPU machine")
        return []
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    iterations = args.iterations or (4 if args.tiny else 150)
    steps = args.steps or (1 if args.tiny else 10)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    start = time.perf_counter()
    speeds = throughput_rows(args.tiny, device, steps)
    row = shortened_row(args.tiny, iterations, output, cache)
    stages = json.loads(row["stage_seconds"] or "{}")
    per_1000 = stages.get("pre-training", 0.0) / iterations * 1000
    reference = speeds[0][2]
    lines = [(n, batch, f"{rate:.1f}" if rate else "out of memory",
              f"{rate / reference:.2f}x" if rate and reference else "",
              f"{rate / throughput.PUBLISHED_H200_IMAGES_PER_S:.2f}x" if rate and not args.tiny else "",
              f"{peak:.0f}" if peak else "") for n, batch, rate, peak in speeds]
    mre = results.overall(row["_file"], "test", "native")
    shortened = (f"ddpm + gaussian, {row['profile']} profile, 1 label, pre-training SHORTENED to {iterations} of "
                 f"{PAPER_ITERATIONS} iterations: {row['status']}, test MRE "
                 f"{'-' if mre is None else f'{mre:.2f}'} {row['unit']}, health {row['health']}, "
                 f"{per_1000 / 60:.1f} min per 1,000 pre-training iterations, run {row['wall_time_s']:.0f} s")
    table = Table(title=f"lmbench GPU check on {name} (torch {torch.__version__}){', tiny mode' if args.tiny else ''}",
                  caption=shortened)
    for column in ("row", "batch", "images/s", "vs as published", f"vs {throughput.PUBLISHED_H200_IMAGES_PER_S} img/s",
                   "peak MiB"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for line in lines:
        table.add_row(*line)
    Console(width=200).print(table)
    print(f"gpu check: {time.perf_counter() - start:.0f} s")
    return lines + [(shortened,)]


def load_matrix_text(text: str, folder: Path):
    path = folder / "gpu-check.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_matrix(path)


if __name__ == "__main__":
    main()
