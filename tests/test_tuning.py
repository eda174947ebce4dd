"""Tuning sessions: deterministic sim search, crash-safe resume under kill -9, RPC with a
server killed mid-run, and builds that use the records (bit-exact)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lepton_compiler import OptionError, QuantConfig, RPCRunner, TuningError, build, tune
from lepton_compiler.tuning.database import Database, knob_key


def _conv_model(cin: int = 16, cout: int = 64, hw: int = 8):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1),
                                torch.nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((1, cin, hw, hw)).astype(np.float32)
    return model, x, QuantConfig(calibration_data=[(x,)])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    model, x, config = _conv_model()
    work = tmp_path_factory.mktemp("tune") / "a"
    session = tune(model, (x,), quantize=config, work_dir=str(work), trials=5, seed=3)
    return model, x, config, work, session


def test_sim_tuning_finds_no_worse_than_default_and_is_deterministic(tuned, tmp_path):
    model, x, config, work, session = tuned
    assert session.trials_run == 5 and len(session.tasks) == 1
    records = Database(work).records
    default = [r for r in records if r["default"]]
    assert len(default) == 1 and records[0] is default[0]  # the default plan is measured first
    best = Database(work).best(records[0]["workload"])
    assert best["cost"] <= default[0]["cost"] and all(r["status"] == "ok" for r in records)
    again = tune(model, (x,), quantize=config, work_dir=str(tmp_path / "b"), trials=5, seed=3)
    assert Database(tmp_path / "b").records == records  # same seed, same records
    space = len(session.tasks[0].candidates)
    assert again.summary().splitlines()[1].split()[1:3] == [str(space), "5"]  # space, trials


def test_a_hung_candidate_times_out_and_is_recorded_as_failed(tuned):
    from lepton_compiler.target.spec import load_spec
    from lepton_compiler.tuning import LocalRunner

    task = tuned[4].tasks[0]
    runner = LocalRunner("sim", timeout=0.2)  # shorter than any real measurement
    try:
        result = runner.measure(task.func, load_spec(), task.default)
    finally:
        runner.close()
    assert result == {"status": "failed", "error": "timed out after 0.2s"}


def test_build_uses_the_tuned_schedule_and_stays_bit_exact(tuned):
    model, x, config, work, _ = tuned
    db = Database(work)
    best = db.best(db.records[0]["workload"])
    compiled = build(model, (x,), target="lepton", quantize=config, tuning_db=str(work))
    (knobs,) = compiled.build_info["tuned_kernels"].values()
    assert knobs == best["knobs"]
    assert np.array_equal(compiled(x), compiled.quantization.reference(x))
    # The same workload inside another model hits the database too.
    other = torch.nn.Sequential(model[0], torch.nn.ReLU(), torch.nn.Conv2d(64, 8, 1)).eval()
    compiled = build(other, (x,), target="lepton", quantize=config, tuning_db=str(work))
    assert list(compiled.build_info["tuned_kernels"].values()) == [best["knobs"]]


def test_resume_after_kill_9_loses_and_duplicates_nothing(tmp_path):
    from lepton_compiler.target.npu_schedule import candidate_plans
    from lepton_compiler.target.spec import load_spec
    from lepton_compiler.tuning.measure import RESIDENCY

    model, x, _ = _conv_model(cin=16, cout=16, hw=8)
    # the plans under each cascade choice: input and output are 64 x 16 int8 (1 KiB each)
    space = sum(len(candidate_plans(64, 16, 144, load_spec(), input_reserved=1024 * len(r)))
                for r in RESIDENCY)
    assert space >= 8
    torch.onnx.export(model, (torch.from_numpy(x),), str(tmp_path / "m.onnx"), dynamo=False,
                      input_names=["x"])
    np.savez(tmp_path / "calib.npz", x=x[None])
    work = tmp_path / "work"
    command = [sys.executable, "-m", "lepton_compiler.cli", "tune", str(tmp_path / "m.onnx"),
               "--calib", str(tmp_path / "calib.npz"), "--work-dir", str(work),
               "--trials", "100"]
    rng = random.Random(0)
    seen: list[dict] = []
    for _ in range(3):
        log = tmp_path / f"tune{len(seen)}.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink,
                                    start_new_session=True)
        deadline = time.time() + 120
        target = len(seen) + 1
        while time.time() < deadline and proc.poll() is None:
            path = work / "records.jsonl"
            if path.exists() and path.read_bytes().count(b"\n") >= target:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.8))  # somewhere inside the next measurement or write
        assert proc.poll() is None, f"the tuner exited before the kill: {log.read_text()[-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        records = Database(work).records  # loads: a torn last line is skipped
        assert records[: len(seen)] == seen  # nothing fsync'ed was lost
        keys = [knob_key(r["knobs"]) for r in records]
        assert len(keys) == len(set(keys))  # nothing measured twice
        seen = records
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = Database(work).records
    assert records[: len(seen)] == seen and len(records) == space
    assert len({knob_key(r["knobs"]) for r in records}) == space
    assert "every candidate measured" in done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rpc_tuning_survives_a_server_killed_mid_run(tmp_path):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host",
                               "127.0.0.1", "--port", str(port), "--port-end",
                               str(port + 1)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        for _ in range(2):
            base = _free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tvm.exec.rpc_server", "--tracker",
                 f"127.0.0.1:{port}", "--key", "lepton-test", "--host", "127.0.0.1",
                 "--port", str(base), "--port-end", str(base + 1)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(4)
        model, x, config = _conv_model(cin=8, cout=16, hw=4)
        runner = RPCRunner(f"127.0.0.1:{port}", "lepton-test", timeout=60)
        original = runner._remote
        calls = {"n": 0}

        def remote_then_kill(*args):
            calls["n"] += 1
            if calls["n"] == 2:
                procs[1].kill()  # one server dies mid-session
            return original(*args)

        runner._remote = remote_then_kill
        tune(model, (x,), quantize=config, work_dir=str(tmp_path / "rpc"), trials=4,
             runner=runner)
        remote = Database(tmp_path / "rpc").records
        assert len(remote) == 4 and all(r["status"] == "ok" for r in remote)
        # remote servers measure plans alone; the local sim runner also cascade choices
        assert not any(r["knobs"].get("resident") for r in remote)
        tune(model, (x,), quantize=config, work_dir=str(tmp_path / "local"), trials=400)
        local = {knob_key(r["knobs"]): r["cost"] for r in Database(tmp_path / "local").records}
        assert [r["cost"] for r in remote] == [local[knob_key(r["knobs"])] for r in remote]
    finally:
        for p in procs:
            p.kill()


def test_database_skips_a_torn_last_line_and_refuses_a_corrupt_middle(tmp_path):
    line = json.dumps({"workload": "w", "knobs": {"k_block": 16}, "status": "ok", "cost": 1})
    path = tmp_path / "records.jsonl"
    path.write_text(line + "\n" + line.replace("16", "32")[:25])
    db = Database(tmp_path)
    assert len(db.records) == 1 and path.read_text() == line + "\n"  # torn tail trimmed
    db.append({"workload": "w", "knobs": {"k_block": 48}, "status": "ok", "cost": 2})
    assert len(Database(tmp_path).records) == 2
    path.write_text(line + "\n{not json\n" + line + "\n")
    with pytest.raises(TuningError, match=r"records.jsonl:2: corrupt tuning record"):
        Database(tmp_path)


def test_bad_tuning_options_are_refused(tmp_path):
    model, x, config = _conv_model()
    with pytest.raises(OptionError, match="needs quantize="):
        tune(model, (x,), work_dir=str(tmp_path))
    with pytest.raises(OptionError, match="unknown runner 'gpu'"):
        tune(model, (x,), quantize=config, work_dir=str(tmp_path), runner="gpu")
    with pytest.raises(OptionError, match="unknown tuning target 'gpu'"):
        tune(model, (x,), quantize=config, target="gpu", work_dir=str(tmp_path))
    with pytest.raises(OptionError, match="host_trials must be a non-negative integer"):
        tune(model, (x,), quantize=config, host_trials=-1, work_dir=str(tmp_path))
    with pytest.raises(TuningError, match="no tuning database here"):
        build(model, (x,), target="lepton", quantize=config, tuning_db=str(tmp_path / "none"))
    with pytest.raises(TuningError, match="no tuning database here"):
        build(model, (x,), tuning_db=str(tmp_path))
    assert Path(tmp_path).exists()



def test_metaschedule_tunes_host_kernels_and_builds_use_the_records(tmp_path):
    """Host kernels go through TVM's MetaSchedule (CPU rules); every measurement is a
    database line, a reloaded database holds them all, and a build takes the MetaSchedule
    schedule where it beats Lepton's own one (the default, measured the same way)."""
    from lepton_compiler.target.host import resolve_host
    from lepton_compiler.tuning.host import host_schedules

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),
                                torch.nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 16)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    work = tmp_path / "host"
    session = tune(model, (x,), target="host", work_dir=str(work), trials=8, timeout=60)
    assert not session.tasks  # no NPU kernels on the host target
    records = [r for r in Database(work).records if r.get("kind") == "host"]
    conv = [r for r in records if "ms_workload" in r or r.get("default")]
    assert conv, records
    workload = conv[0]["workload"]
    mine = [r for r in records if r["workload"] == workload]
    assert sum(bool(r.get("default")) for r in mine) == 1
    assert len([r for r in mine if not r.get("default")]) == 8
    assert all(r["status"] == "ok" and r["cost"] > 0 for r in mine)
    assert workload in session.summary()  or "(host)" in session.summary()

    # Without Lepton's default record in the database, the best MetaSchedule record is used.
    only_ms = tmp_path / "only_ms"
    only_ms.mkdir()
    lines = (work / "records.jsonl").read_text().splitlines()
    (only_ms / "records.jsonl").write_text(
        "\n".join(line for line in lines if '"default": true' not in line) + "\n")
    compiled = build(model, (x,), target="host", tuning_db=str(only_ms))
    assert list(compiled.build_info["tuned_kernels"].values()) == ["metaschedule"]
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-5, atol=1e-5)

    # With it, MetaSchedule's schedule is taken only where it measured faster.
    best_ms = min(r["cost"] for r in mine if not r.get("default"))
    default = next(r["cost"] for r in mine if r.get("default"))
    compiled = build(model, (x,), target="host", tuning_db=str(work))
    assert bool(compiled.build_info["tuned_kernels"]) == (best_ms < default)
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-5, atol=1e-5)
    choose = host_schedules(Database(only_ms), resolve_host().tvm_target())
    assert choose is not None
