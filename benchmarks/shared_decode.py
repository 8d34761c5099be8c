"""Workers starting together on a fresh data cache, as the pool executor's do: the seconds until
each has the dataset decoded and resized.

    python benchmarks/shared_decode.py --dataset isbi2015 --root ../shared/data/isbi2015 --size 128

One worker decodes under the cache file's lock; the others wait for it and read its file.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

from lmbench.config.specs import ComponentSpec
from lmbench.data.decoded import DataCache


def one_worker(cache: str, dataset: str, root: str, size: int, start, seconds) -> None:
    spec = ComponentSpec("dataset", dataset, dataset, {"root": root}, {})
    start.wait()
    began = time.perf_counter()
    DataCache(Path(cache)).get(spec, size)
    seconds.put(time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="isbi2015")
    parser.add_argument("--root", required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    start, seconds = context.Barrier(args.workers), context.Queue()
    with tempfile.TemporaryDirectory() as cache:
        workers = [context.Process(target=one_worker, args=(cache, args.dataset, args.root, args.size, start, seconds))
                   for _ in range(args.workers)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if any(worker.exitcode for worker in workers):
            raise SystemExit("a worker failed")
        times = sorted(seconds.get() for _ in workers)
    print(f"{args.dataset} at {args.size} px, {args.workers} workers on a fresh cache: "
          + ", ".join(f"{t:.1f} s" for t in times))


if __name__ == "__main__":
    main()
