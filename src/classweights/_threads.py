"""The counting threads: one pool per size for the process, and an ordered map over it."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

_T = TypeVar("_T")
_R = TypeVar("_R")


def _ordered_map(fn: Callable[[_T], _R], items: Iterator[_T] | Iterable[_T], workers: int) -> Iterator[_R]:
    """``map(fn, items)`` on ``workers`` threads, in order, with at most ``workers + 1`` items in flight.

    One item more than threads keeps every thread busy while the next item is
    read; more would only hold more chunks (file buffers) in memory.
    """
    if workers == 1:
        yield from map(fn, items)
        return
    pool = _thread_pool(workers, os.getpid())
    window: list[Future[_R]] = []
    for item in items:
        window.append(pool.submit(_call_and_let_go, fn, [item]))
        del item  # nor does this loop hold on to it while the next one is read
        if len(window) > workers:
            yield window.pop(0).result()
    for future in window:
        yield future.result()


def _call_and_let_go(fn: Callable[[_T], _R], box: list[_T]) -> _R:
    """``fn(item)``, holding ``item`` only until ``fn`` returns: once its result is in, nothing of the pool refers to
    the item (the pool keeps its task's arguments a moment longer), so a file stream may reuse its buffer."""
    return fn(box.pop())


@functools.lru_cache(maxsize=4)
def _thread_pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """One pool per size, kept for the process: starting threads costs ~10% of counting 20M labels.

    Keyed by ``pid`` too, so a forked child (a DataLoader worker) makes its own
    pool instead of waiting on threads that did not survive the fork.

    Its threads run torch's operations on one thread each: they are the
    parallelism. Left alone, every operation in each of them would split over
    torch's own threads as well and wait for all of them at its end; while
    other work holds a core, that wait lasts a time slice (a 4 MiB chunk took
    30 ms instead of 1.7 ms). ``torch.set_num_threads`` also sets the number
    that threads starting later take, so the caller's is put back once every
    thread of the pool has taken 1. Only with OpenMP, whose number is per
    thread: torch's own thread pool (other builds) is one for the process.
    """
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"classweights-{pid}")
    caller = torch.get_num_threads()
    started = threading.Barrier(workers + 1)

    def one_torch_thread() -> None:
        torch.get_num_threads()  # torch sets up a thread's number when it first asks for it: before it is changed
        torch.set_num_threads(1)  # for this thread, which keeps it
        started.wait()

    pool = ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix=f"classweights-{pid}", initializer=one_torch_thread
    )
    try:
        for _ in range(workers):  # a task waiting on the barrier makes the next one start a thread of its own
            pool.submit(int)
        started.wait()
    except BaseException:  # a thread that could not start, or Ctrl-C: release the ones waiting
        started.abort()
        pool.shutdown(wait=False)
        raise
    finally:
        torch.set_num_threads(caller)
    return pool
