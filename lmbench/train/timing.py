"""Where a run's time goes: seconds per stage, kept in its run row (``stage_seconds``).

Stages nest: a stage's seconds exclude those of the stages inside it (fine-tuning's are
its training steps, the validation passes being their own stage); the run row adds
``other``, what no stage covers, so that a run's stages add up to its wall time. Outside
``recording`` a stage costs two clock reads and is dropped.
"""

from __future__ import annotations

import contextlib
import time

_stack: list[list] = []  # [name, start, seconds spent in inner stages], innermost last
_seconds: dict[str, float] | None = None


@contextlib.contextmanager
def recording():
    """Collect the stages run inside into the dict yielded."""
    global _seconds
    outer, _seconds = _seconds, {}
    try:
        yield _seconds
    finally:
        _seconds = outer


@contextlib.contextmanager
def stage(name: str):
    frame = [name, time.perf_counter(), 0.0]
    _stack.append(frame)
    try:
        yield
    finally:
        _stack.pop()
        spent = time.perf_counter() - frame[1]
        if _stack:
            _stack[-1][2] += spent
        if _seconds is not None:
            _seconds[name] = _seconds.get(name, 0.0) + spent - frame[2]
