"""One function over many inputs in worker processes, with a progress bar: the engine of
``webda prepare-data --workers N``.

Each task is independent and its result a pure function of its input, so the results do not
depend on the number of workers; callers put them back in input order. Workers run one
thread each for torch and OpenCV (the parallelism is the processes); FFmpeg decoding in a
worker gets the cores left per worker (:func:`decode_threads`).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

from tqdm.auto import tqdm


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_workers(workers: Optional[int]) -> int:
    """``workers``, or :func:`default_workers` when None; ValueError unless >= 1."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


def decode_threads(workers: int) -> int:
    """FFmpeg threads per video when ``workers`` processes decode at once."""
    return max(1, default_workers() // workers)


def _init_worker() -> None:
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)


def run_tasks(
    fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int, desc: str, unit: str = "file",
    show_progress: bool = True,
) -> Iterator[Tuple[int, Any]]:
    """Yield ``(i, fn(tasks[i]))`` for every task, in the order they finish.

    ``workers`` > 1 runs them in that many processes (``fn`` and the tasks must pickle), at most
    ``2 * workers`` in flight; otherwise in this process. An exception in ``fn`` propagates.
    No progress bar is shown for no tasks.
    """
    if not tasks:
        return
    with tqdm(total=len(tasks), desc=desc, unit=unit, disable=not show_progress, leave=False) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                yield i, fn(task)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_init_worker) as pool:
            pending, queued = {}, iter(enumerate(tasks))
            try:
                while True:
                    for i, task in queued:
                        pending[pool.submit(fn, task)] = i
                        if len(pending) >= 2 * workers:
                            break
                    if not pending:
                        return
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield pending.pop(future), future.result()
                        bar.update()
            finally:
                for future in pending:
                    future.cancel()
