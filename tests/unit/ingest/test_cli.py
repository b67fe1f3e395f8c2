"""`xraylab dlq` refuses bad arguments before it reaches for Kafka."""

import subprocess
import sys

XRAYLAB = [sys.executable, "-m", "xraylab_cli"]


def dlq(*args: str) -> subprocess.CompletedProcess:
    # Nothing listens on port 1: any of these that reached for the broker would fail differently.
    env = {"PATH": "/usr/bin:/bin", "XRAYLAB_KAFKA_BOOTSTRAP": "127.0.0.1:1", "XRAYLAB_ENV_FILE": "/nonexistent"}
    return subprocess.run([*XRAYLAB, "dlq", *args], capture_output=True, text=True, timeout=120, env=env)


def test_replay_without_saying_what_is_refused() -> None:
    out = dlq("replay")
    assert out.returncode == 2 and "--reason" in out.stderr and "--all" in out.stderr


def test_an_unknown_reason_is_refused_with_the_known_ones() -> None:
    for command in ("list", "replay"):
        out = dlq(command, "--reason", "missing_objekt")
        assert out.returncode == 2 and "unknown reason missing_objekt" in out.stderr
        assert "missing_object" in out.stderr and "retries_exhausted" in out.stderr
