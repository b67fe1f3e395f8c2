"""`xraylab ui` runs the review app on its own, behind the same login as on the Serve ingress."""

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.accounts import new_account
from xraylab.db.session import Database, upgrade_schema

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_standalone_ui_refuses_to_start_without_accounts_then_requires_login(tmp_path) -> None:
    url_db = f"sqlite:///{tmp_path / 'ui.db'}"
    env = {**os.environ, "XRAYLAB_DATABASE_URL": url_db, "GRADIO_ANALYTICS_ENABLED": "False",
           "XRAYLAB_LOGIN_IP_MAX_FAILURES": "4"}
    env["FORWARDED_ALLOW_IPS"] = "127.0.0.1"  # uvicorn's own default, which `xraylab ui` must not follow
    port = free_port()
    command = [sys.executable, "-m", "xraylab_cli", "ui", "--port", str(port)]
    unmigrated = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert unmigrated.returncode == 2 and "xraylab db upgrade" in unmigrated.stderr
    db = Database(url_db)
    upgrade_schema(db.engine)
    empty = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and "xraylab users add" in empty.stderr
    name, password = new_account(db)

    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                requests.get(f"{url}/login", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(1)
        page = requests.get(f"{url}/ui/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=10)
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
        assert requests.get(f"{url}/ui/config", timeout=10).status_code == 401
        session = requests.Session()
        wrong = session.post(f"{url}/login", data={"username": name, "password": "not the password"}, timeout=10)
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
        ok = session.post(f"{url}/login", data={"username": name, "password": password, "next": "/ui/"},
                          allow_redirects=False, timeout=10)
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/"
        assert "httponly" in ok.headers["set-cookie"].lower() and "samesite=lax" in ok.headers["set-cookie"].lower()
        assert session.get(f"{url}/ui/config", timeout=10).status_code == 200
        token = session.cookies["xraylab_session"]
        session.get(f"{url}/logout", timeout=10)
        assert session.get(f"{url}/ui/config", timeout=10).status_code == 401
        replayed = requests.get(f"{url}/ui/config", cookies={"xraylab_session": token}, timeout=10)
        assert replayed.status_code == 401 and replayed.json()["error"] == "session_expired"  # ended on the server
        # The per-address limit counts the real peer: an X-Forwarded-For from a client (no trusted proxy is
        # configured) neither spreads the failures over made-up addresses nor resets them. (One failure above.)
        for i in range(3):
            guess = requests.post(f"{url}/login", data={"username": f"ghost-{i}", "password": "x"},
                                  headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=10)
            assert guess.status_code == 401
        blocked = requests.post(f"{url}/login", data={"username": "ghost-x", "password": password},
                                headers={"X-Forwarded-For": "203.0.113.99"}, allow_redirects=False, timeout=10)
        assert blocked.status_code == 429 and "from this address" in blocked.text
        # The browser where the doctor signed in (its device cookie) is not shut out by it.
        again = session.post(f"{url}/login", data={"username": name, "password": password, "next": "/ui/"},
                             allow_redirects=False, timeout=10)
        assert again.status_code == 303
    finally:
        proc.terminate()
        proc.wait(30)
    db.dispose()
