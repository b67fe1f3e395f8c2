"""Ray nodes started as an operator starts them, ``ray start --head`` and ``ray start --address``, each a
``--block`` process of this test's own: its PID and its process tree (raylet, agents, workers) are how the
test stops or kills exactly that node, never a process found by name. Every node starts with Ray's token
authentication (RAY_AUTH_MODE=token), as cluster/ray/cluster.yaml starts them: the suite's fixture makes the token
(``ray get-auth-token --generate``, ~/.ray/auth_token) before the first node starts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
# Ray's worker processes take ports from 10002-19999 by default, the range of the local stack's services.
WORKER_PORTS = ("--min-worker-port=30000", "--max-worker-port=39999")


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen
    log: Path

    def pids(self) -> list[int]:
        """The ``ray start --block`` process and every process under it: the node's raylet, its agents and
        its workers (the workers are the raylet's children)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> list[int]:
        """SIGKILL the node's processes at once, as a machine that dies: nothing shuts down cleanly."""
        pids = self.pids()
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(30)
        return pids

    def stop(self) -> None:
        """``ray start --block`` stops its node's processes on SIGTERM; SIGKILL what is left after 30 s."""
        if self.process.poll() is not None:
            return
        pids = self.pids()
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_node(name: str, log_dir: Path, *args: str) -> RayNode:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"ray-{name}.log"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    process = subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", *WORKER_PORTS, *args],
                               stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return RayNode(name, process, log)


def start_head(log_dir: Path, *, port: int, dashboard_port: int, metrics_port: int, temp_dir: Path,
               num_cpus: int, labels: dict[str, str]) -> RayNode:
    return start_node("head", log_dir, "--head", f"--port={port}", f"--num-cpus={num_cpus}",
                      "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                      f"--metrics-export-port={metrics_port}", f"--temp-dir={temp_dir}", f"--labels={_labels(labels)}")


def start_worker(name: str, log_dir: Path, *, address: str, metrics_port: int, agent_port: int, num_cpus: int,
                 labels: dict[str, str], resources: dict[str, float]) -> RayNode:
    return start_node(name, log_dir, f"--address={address}", f"--num-cpus={num_cpus}",
                      f"--metrics-export-port={metrics_port}", f"--dashboard-agent-listen-port={agent_port}",
                      f"--labels={_labels(labels)}", f"--resources={json.dumps(resources)}")


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.5):  # noqa: ANN001 - a test helper
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every_s)
    raise TimeoutError(f"{what} not within {timeout_s:.0f}s")
