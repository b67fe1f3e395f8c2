"""Prometheus without its lifecycle API: cluster/local/prometheus.sh starts it without --web.enable-lifecycle (so
POST /-/reload and /-/quit are refused to whoever reaches its port), and ``reload_prometheus`` reloads it with
SIGHUP to the PID the script recorded, checked to be a running ``prometheus``, then reads the reload's outcome
from its /metrics. A stand-in Prometheus here: a Python process named ``prometheus`` serving those gauges."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from xraylab.monitor import prom_rules

ROOT = Path(__file__).resolve().parents[4]
SCRIPT = ROOT / "cluster" / "local" / "prometheus.sh"

STAND_IN = r'''
import http.server, signal, sys, time
state = {"at": time.time(), "ok": 1.0, "hups": 0}
def hup(*_):
    state["hups"] += 1
    if sys.argv[1] == "refuse":
        state["ok"] = 0.0
    else:
        state["at"], state["ok"] = time.time(), 1.0
signal.signal(signal.SIGHUP, hup)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = (f"prometheus_config_last_reload_success_timestamp_seconds {state['at']!r}\n"
                f"prometheus_config_last_reload_successful {state['ok']!r}\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever(poll_interval=0.05)
'''


def started(folder: Path, mode: str) -> tuple[subprocess.Popen, str]:
    """The stand-in, its argv[0] a path named ``prometheus`` (a link to this Python: only the stdlib is used)."""
    program = folder / "prometheus"
    program.symlink_to(Path(sys.executable).resolve())
    process = subprocess.Popen([str(program), "-c", STAND_IN, mode], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    assert port, "the stand-in Prometheus did not start"
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture()
def stand_in(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    mode = getattr(request, "param", "accept")
    process, url = started(tmp_path_factory.mktemp("bin"), mode)
    yield process, url
    process.kill()
    process.wait(10)


def record(tmp_path: Path, pid: int) -> Path:
    path = tmp_path / "run" / "prometheus.pid"
    path.parent.mkdir()
    path.write_text(f"{pid}\n")
    return path


def test_the_script_starts_prometheus_without_the_lifecycle_api() -> None:
    code = [line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "lifecycle" in line], "the HTTP API could reload or stop Prometheus"
    assert any(re.search(r'echo \$! > "\$RUN/\$NAME\.pid"', line) for line in code)  # the PID reload signals
    assert "NAME=prometheus" in code


def test_the_pid_file_is_where_the_script_records_it(tmp_path: Path) -> None:
    from xraylab.settings import load_settings

    assert prom_rules.pid_file(load_settings(STATE_DIR=tmp_path)) == tmp_path / "run" / "prometheus.pid"


def test_reload_is_a_sighup_to_the_recorded_prometheus(tmp_path: Path, stand_in) -> None:
    process, url = stand_in
    assert prom_rules.reload_prometheus(url, timeout=5, pid_path=record(tmp_path, process.pid)) is True
    assert process.poll() is None


@pytest.mark.parametrize("stand_in", ["refuse"], indirect=True)
def test_a_refused_reload_is_false(tmp_path: Path, stand_in, caplog: pytest.LogCaptureFixture) -> None:
    process, url = stand_in
    assert prom_rules.reload_prometheus(url, timeout=5, pid_path=record(tmp_path, process.pid)) is False
    assert "refused" in caplog.text


def test_a_pid_that_is_not_prometheus_is_not_signalled(tmp_path: Path, stand_in) -> None:
    _, url = stand_in
    other = subprocess.Popen(["sleep", "30"])  # SIGHUP would end it
    try:
        assert prom_rules.reload_prometheus(url, timeout=2, pid_path=record(tmp_path, other.pid)) is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(10)


def test_no_pid_file_or_no_prometheus_is_false_not_an_exception(tmp_path: Path, stand_in,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    _, url = stand_in
    assert prom_rules.reload_prometheus(url, timeout=1, pid_path=tmp_path / "missing.pid") is False
    url = "http://user:secret@127.0.0.1:9/"
    assert prom_rules.reload_prometheus(url, timeout=1, pid_path=tmp_path / "missing.pid") is False
    assert "secret" not in caplog.text and "unreachable" in caplog.text
