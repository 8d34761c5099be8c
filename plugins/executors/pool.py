"""Worker processes on one machine: one per GPU (each sees only its own, through
CUDA_VISIBLE_DEVICES), or ``workers`` CPU slots; each run uses the matrix's ``threads``.
Groups are handed out so that workers starting together train different pre-trainings
(``spread_pretrainings``) instead of waiting on one another's cache lock."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from lmbench.api import Executor, NonNegativeInt, Summary, one_line


def spread_pretrainings(groups: list) -> list:
    """``groups`` reordered: first every pre-training's first group, then every second one,
    and so on (matrix order within each round), so that a pre-training shared by several
    groups is trained by one worker while the others train other ones."""
    seen: dict[str, int] = {}
    rounds = []
    for group in groups:
        key = group[0].pretrain_key
        rounds.append(seen.get(key, 0))
        seen[key] = rounds[-1] + 1
    return [group for _, group in sorted(zip(rounds, groups), key=lambda pair: pair[0])]


def _pin(slots, gpus: int) -> None:
    """Worker start-up: take a slot, and a GPU of its own where there are GPUs."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)


class Pool(Executor):
    @dataclass
    class Params:
        workers: NonNegativeInt = 0  # 0: one per visible GPU, or the cores over the matrix's threads

    def run(self, job, groups, tracker):
        import torch

        gpus = torch.cuda.device_count()
        threads = groups[0][0].threads if groups else 1  # the matrix's, the same for every run
        workers = self.params.workers or gpus or max(1, (os.cpu_count() or 1) // threads)
        context = multiprocessing.get_context("spawn")  # no inherited CUDA or thread state
        slots = context.Queue()
        for slot in range(workers):
            slots.put(slot)
        summary = Summary()
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_pin, initargs=(slots, gpus)) as pool:
            futures = {pool.submit(job, group): group for group in spread_pretrainings(groups)}
            for future in as_completed(futures):
                group = futures[future]
                try:
                    done = future.result()
                except Exception as exc:
                    done = Summary.lost(group, f"worker lost: {one_line(exc)}")
                tracker.finished(group, done)
                summary.add(done)
        return summary
