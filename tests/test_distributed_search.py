"""KerasTuner's chief/worker mode: a chief and two workers on 127.0.0.1 share one search."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from recipes import io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_LINE = re.compile(r"^val_acc: .*, \((\d+) / (\d+)\).*\[(w\d), stage (\d)\]$")

pytest.importorskip("grpc", reason="KerasTuner's distributed oracle needs grpcio")


def _grpc_oracle_available() -> bool:
    try:
        from keras_tuner.src import protos
        from keras_tuner.src.distribute import oracle_chief  # noqa: F401

        protos.get_service_grpc()
    except Exception:  # noqa: BLE001 - any import problem means: skip
        return False
    return True


def free_port(n=2) -> int:
    """A port p with p .. p+n-1 free (stage i uses PORT + i - 1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + n > 65535:
            continue
        try:
            for k in range(1, n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + k))
        except OSError:
            continue
        return port
    pytest.skip("no free pair of ports")


@pytest.mark.slow
@pytest.mark.skipif(not _grpc_oracle_available(), reason="KerasTuner's gRPC oracle unavailable")
def test_chief_and_two_workers_run_every_trial_once(tmp_path):
    port = free_port(2)
    workdir = tmp_path / "search"
    common = ["--config=digits_mlp:quick", f"--workdir={workdir}", "--stages=4x1,2x1",
              "--space=optimizer.learning_rate=log:1e-4:1e-1", f"--oracle=127.0.0.1:{port}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(key, None)

    # Each process writes to its own file: with pipes read one after the other, a worker
    # that fills its pipe while the chief is being read blocks, and the chief waits for it.
    logs = []

    def start(name, *extra):
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed below
        logs.append(log)
        return subprocess.Popen([sys.executable, "-m", "tuning.search", *common, *extra],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    procs = [start("chief", "--role=chief")]
    time.sleep(1)
    procs += [start("w1", "--role=worker", "--tuner_id=w1"),
              start("w2", "--role=worker", "--tuner_id=w2")]
    try:
        for p in procs:
            p.wait(timeout=400)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"{name}.log").read_text() for name in ("chief", "w1", "w2")]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]

    ran = []  # (stage, trial number, worker) for every trial a worker trained
    for out in outputs[1:]:
        for line in out.splitlines():
            m = WORKER_LINE.match(line.strip())
            if m:
                ran.append((int(m.group(4)), int(m.group(1)), m.group(3)))
    runs = sorted((s, n) for s, n, _ in ran)
    assert runs == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2)], ran  # each once

    rows = io.read_csv(str(workdir / "trials.csv"))
    assert sorted((r["stage"], r["trial"]) for r in rows) == [
        ("1", "0"), ("1", "1"), ("1", "2"), ("1", "3"), ("2", "0"), ("2", "1")]
    assert all(r["status"] in ("completed", "exploded") for r in rows)
    chief = outputs[0]
    assert "stage 2/2" in chief and "best:" in chief
    assert (workdir / "best_config.py").exists()

    # A worker that comes after the chief closed its stages (as one still starting while
    # the others ran a stage's last trials) moves on instead of waiting on a closed port
    # for KerasTuner's hour, or crashing on a cut stream.
    started = time.time()
    late = subprocess.run([sys.executable, "-m", "tuning.search", *common, "--role=worker",
                           "--tuner_id=w3"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert late.returncode == 0, late.stdout[-3000:] + late.stderr[-3000:]
    assert late.stdout.count("the chief had closed it") == 2, late.stdout
    assert not any(WORKER_LINE.match(line.strip()) for line in late.stdout.splitlines())
    assert time.time() - started < 60
    assert io.read_csv(str(workdir / "trials.csv")) == rows  # nothing re-run
