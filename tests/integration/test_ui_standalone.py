"""`xraylab ui` runs the review app on its own, behind login."""

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_standalone_ui_requires_login(settings, tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "XRAYLAB_DATABASE_URL": f"sqlite:///{tmp_path / 'ui.db'}", "GRADIO_ANALYTICS_ENABLED": "False"}
    subprocess.run([sys.executable, "-m", "xraylab_cli", "db", "upgrade"], env=env, check=True, timeout=120)
    proc = subprocess.Popen([sys.executable, "-m", "xraylab_cli", "ui", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if requests.get(url, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        assert requests.get(url, timeout=10).status_code == 200
        user, password = settings.ui_users()[0]
        wrong = requests.post(f"{url}/login", data={"username": user, "password": "wrong"}, timeout=10)
        assert wrong.status_code != 200
        ok = requests.post(f"{url}/login", data={"username": user, "password": password}, timeout=10)
        assert ok.status_code == 200 and ok.json().get("success") is True
    finally:
        proc.terminate()
        proc.wait(30)


def test_standalone_ui_refuses_to_start_without_users(tmp_path) -> None:
    env = {**os.environ, "XRAYLAB_UI_USERS": "", "XRAYLAB_ENV_FILE": str(tmp_path / "none.env")}
    result = subprocess.run([sys.executable, "-m", "xraylab_cli", "ui"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "XRAYLAB_UI_USERS" in result.stderr
