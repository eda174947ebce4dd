"""Measuring candidates on other machines through a TVM RPC tracker.

``RPCRunner(tracker="host:port", key="lepton")`` builds each candidate here, uploads the
kernel library to an ``rpc_server`` registered with the tracker under ``key``, and runs it
there (sim cycles from the remote NPU counters, or wall time). Infrastructure failures — no
server, a server that dies mid-measurement, a dropped connection — are retried on another
server and never recorded as a bad schedule; only an error raised by the candidate itself
is.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from lepton_compiler.errors import TuningError

logger = logging.getLogger(__name__)


@dataclass
class RPCRunner:
    """Measure through ``tracker`` ("host:port") on servers registered as ``key``."""

    tracker: str
    key: str
    mode: str = "sim"
    timeout: float = 120.0
    retries: int = 5
    repeats: int = 5
    name: str = "rpc"

    @property
    def unit(self) -> str:
        return "cycles" if self.mode == "sim" else "seconds"

    def close(self) -> None:
        pass

    def _session(self) -> Any:
        from tvm import rpc

        host, _, port = self.tracker.rpartition(":")
        client = rpc.connect_tracker(host, int(port))
        return client.request(self.key, priority=1, session_timeout=int(self.timeout))

    def measure(self, func_json: str, spec: Any, knobs: dict[str, Any]) -> dict[str, Any]:
        import tvm

        from lepton_compiler.tuning.measure import build_candidate

        func = tvm.ir.load_json(func_json)
        try:
            so_bytes, plan = build_candidate(func, spec, knobs)
        except Exception as err:  # the candidate itself does not build: a bad schedule
            return {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        last = ""
        for attempt in range(self.retries):
            try:
                return {"status": "ok", "cost": self._remote(so_bytes, func, spec, plan)}
            except Exception as err:  # infrastructure: retry, never a bad record
                last = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                logger.warning("RPC measurement failed (attempt %d): %s", attempt + 1, last)
                time.sleep(min(0.5 * (attempt + 1), 2.0))
        raise TuningError(f"RPC tracker {self.tracker} key {self.key!r}: no server could "
                          f"measure after {self.retries} attempts ({last})")

    def _remote(self, so_bytes: bytes, func: Any, spec: Any, plan: Any) -> float:
        import numpy as np

        from lepton_compiler.target.npu_kernels import COUNTERS, MODES
        from lepton_compiler.target.npu_schedule import sim_static
        from lepton_compiler.tuning.measure import random_args
        from lepton_runtime.profile import sim_cycles

        remote = self._session()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "candidate.so")
            with open(path, "wb") as f:
                f.write(so_bytes)
            remote.upload(path)
        module = remote.load_module("candidate.so")
        module["lepton_install_backend"]()
        dev = remote.cpu()
        import tvm

        args = [tvm.runtime.tensor(a, dev) for a in random_args(func)]
        fn = module["kernel"]
        if self.mode == "sim":
            module["lepton_npu_set_mode"](MODES["sim"])
            read = module["lepton_npu_counter"]
            read(-1)
            fn(*args)
            counts = {name: int(read(i)) for i, name in enumerate(COUNTERS)}
            return float(sim_cycles(counts, sim_static(plan, spec)))
        module["lepton_npu_set_mode"](MODES["fast"])
        timer = module.time_evaluator("kernel", dev, number=1, repeat=self.repeats)
        return float(np.median(timer(*args).results))
