"""Runs each fuzz case in a child process forked from a server that has imported the
compiler once: a crash (signal) or a hang (timeout) of one case is recorded, never fatal."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable
from typing import Any

PRELOAD = ["numpy", "onnx", "onnxruntime", "tvm", "lepton_compiler", "lepton_runtime",
           "tests.fuzz.cases"]

_CTX = None


def context() -> Any:
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


def _child(fn: Callable[..., dict], args: tuple, conn: Any) -> None:
    import os

    os.environ.setdefault("LEPTON_PROGRESS", "0")
    try:
        result = fn(*args)
    except BaseException as err:  # reported as a harness failure, not swallowed
        result = {"outcome": "harness-error", "type": type(err).__name__, "message": str(err)}
    conn.send(result)
    conn.close()


def _receive(recv: Any, wait: float) -> dict | None:
    """The child's result if it has written one within ``wait`` seconds."""
    if not recv.poll(wait):
        return None
    try:
        return recv.recv()
    except EOFError:
        return None


def run_all(fn: Callable[..., dict], jobs: Iterable[tuple[str, tuple]], timeout: float,
            parallel: int = 2) -> dict[str, dict]:
    """Run ``fn(*args)`` for every (case id, args) in its own child, ``parallel`` at a time.

    A child killed by a signal is ``{"outcome": "crash", "signal": n}``; one still running
    after ``timeout`` seconds is killed and ``{"outcome": "hang"}``.
    """
    ctx = context()
    pending = list(jobs)
    running: dict[str, tuple[Any, Any, float]] = {}
    results: dict[str, dict] = {}
    while pending or running:
        while pending and len(running) < parallel:
            case, args = pending.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(fn, args, send), daemon=True)
            proc.start()
            send.close()
            running[case] = (proc, recv, time.monotonic())
        time.sleep(0.005)
        for case, (proc, recv, start) in list(running.items()):
            result = _receive(recv, 0)
            if result is None and proc.exitcode is None:  # still running
                if time.monotonic() - start < timeout:
                    continue
                proc.kill()
                proc.join()
                result = {"outcome": "hang", "seconds": timeout}
            elif result is None:
                result = _receive(recv, 0.5)  # it may have written its result, then exited
            if result is None:
                proc.join()
                code = proc.exitcode
                result = {"outcome": "crash", "signal": -code} if code and code < 0 \
                    else {"outcome": "crash", "exit": code}
            else:
                proc.join(timeout=10)
            recv.close()
            results[case] = {**result, "seconds": round(time.monotonic() - start, 3)}
            del running[case]
    return results
