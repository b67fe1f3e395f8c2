"""The access middleware and login pages on a bare FastAPI app (no Gradio): who gets through, what they see."""

from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from tests.accounts import new_account, new_api_key
from ui.access import SESSION_COOKIE, install_access, principal_of
from xraylab.db.session import Database, upgrade_schema
from xraylab.settings import load_settings


def build_site(tmp_path: Path, **overrides) -> tuple[FastAPI, Database]:
    """A bare app behind the access middleware, on a database of its own, with some settings changed."""
    settings = load_settings(STATE_DIR=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", **overrides)
    db = Database(settings.DATABASE_URL)
    upgrade_schema(db.engine)
    app = FastAPI()
    install_access(app, db, settings)

    @app.get("/ui/data")
    async def data(request: Request) -> dict:
        return {"user": principal_of(request).name}

    return app, db


@pytest.fixture()
def site(tmp_path: Path):
    app, db = build_site(tmp_path, LOGIN_MAX_FAILURES=3)

    @app.post("/v1/thing")
    async def thing(request: Request) -> dict:
        return {"user": principal_of(request).name}

    yield TestClient(app), db
    db.dispose()


def log_in(client: TestClient, name: str, password: str, **headers: str):
    return client.post("/login", data={"username": name, "password": password, "next": "/ui/data"},
                       headers=headers, follow_redirects=False)


def test_login_sets_a_session_that_other_cookies_do_not_hide(site) -> None:
    client, db = site
    name, password = new_account(db)
    answer = log_in(client, name, password)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/data"
    token = answer.cookies[SESSION_COOKIE]
    client.cookies.clear()
    noisy = {"Cookie": f'prefs={{"a": 1, "b": "x y"}}; {SESSION_COOKIE}={token}; other=1'}
    assert client.get("/ui/data", headers=noisy).json() == {"user": name}  # a JSON cookie beside it


def test_a_new_login_ends_the_session_it_replaces(site) -> None:
    client, db = site
    name, password = new_account(db)
    first = log_in(client, name, password).cookies[SESSION_COOKIE]
    log_in(client, name, password)
    client.cookies.clear()
    assert client.get("/ui/data", cookies={SESSION_COOKIE: first}).status_code == 401


def test_requests_from_another_site_are_refused(site) -> None:
    client, db = site
    name, password = new_account(db)
    assert log_in(client, name, password, Origin="http://evil.example").status_code == 403
    assert log_in(client, name, password, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert log_in(client, name, password, Origin="http://testserver").status_code == 303
    key = new_api_key(db)
    plain = client.post("/v1/thing", headers={"Authorization": f"Bearer {key}"})  # curl-like: no Origin
    assert plain.status_code == 200
    forged = client.post("/v1/thing", headers={"Sec-Fetch-Site": "same-site"})
    assert forged.status_code == 403 and forged.json()["error"] == "cross_site"


def test_unknown_names_are_throttled_like_accounts(site) -> None:
    client, db = site
    name, _ = new_account(db)
    answers = {}
    for who in (name, "nobody-here"):
        answers[who] = [log_in(client, who, f"wrong {i}").status_code for i in range(4)]
    assert answers[name] == answers["nobody-here"] == [401, 401, 429, 429]
    assert "Too many failed attempts" in log_in(client, "nobody-here", "x").text


def test_pages_go_to_login_and_api_calls_get_401(site) -> None:
    client, _ = site
    page = client.get("/ui/data", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fui%2Fdata"
    assert client.get("/ui/data").json()["error"] == "login_required"
    bad_next = client.get("/login?next=//evil.example/x")
    assert 'value="/ui/"' in bad_next.text  # only a local path is followed after login


def test_the_client_address_comes_from_trusted_proxies_only(tmp_path: Path) -> None:
    from ui.access import AccessControl

    settings = load_settings(STATE_DIR=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
                             TRUSTED_PROXIES=["10.0.0.0/24"])
    access = AccessControl(Database(settings.DATABASE_URL), settings)

    def address(peer: str, *forwarded: str) -> str:
        return access.client_address({"client": (peer, 5000),
                                      "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]})

    assert address("127.0.0.1", "203.0.113.7") == "127.0.0.1"  # loopback is no proxy unless configured
    assert address("198.51.100.9", "203.0.113.7") == "198.51.100.9"
    assert address("10.0.0.5", "203.0.113.7") == "203.0.113.7"
    # A client's own X-Forwarded-For is kept by the proxy, which appends the address it saw: the right-most
    # untrusted entry is the one to believe.
    assert address("10.0.0.5", "6.6.6.6, 203.0.113.7") == "203.0.113.7"
    assert address("10.0.0.5", "203.0.113.7, 10.0.0.9") == "203.0.113.7"  # through two of our proxies
    assert address("10.0.0.5") == "10.0.0.5"
    assert address("::ffff:10.0.0.5", "203.0.113.7") == "203.0.113.7"  # an IPv4-mapped peer is the same proxy
    assert address("10.0.0.5", "203.0.113.7:51234") == "203.0.113.7"  # a proxy that writes the client's port
    assert address("10.0.0.5", "[2001:db8::1]:443") == "2001:db8::1"


def test_a_forwarded_header_neither_resets_nor_moves_the_address_limit(tmp_path: Path) -> None:
    app, db = build_site(tmp_path, LOGIN_IP_MAX_FAILURES=4)
    client = TestClient(app)
    name, password = new_account(db)
    for i in range(4):
        assert log_in(client, f"guess-{i}", "x", **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code == 401
    refused = log_in(client, name, password, **{"X-Forwarded-For": "203.0.113.99"})
    assert refused.status_code == 429 and "from this address" in refused.text


def test_a_browser_that_signed_in_before_is_not_shut_out_by_the_address_limit(tmp_path: Path) -> None:
    """30 bad logins from a shared address (a proxy, a NAT) block new browsers there, not a doctor's own."""
    from ui.access import DEVICE_COOKIE

    app, db = build_site(tmp_path, LOGIN_IP_MAX_FAILURES=4)
    doctor, stranger = TestClient(app), TestClient(app)
    name, password = new_account(db)
    first = log_in(doctor, name, password)
    assert first.status_code == 303 and DEVICE_COOKIE in first.cookies
    assert "path=/login" in first.headers.get_list("set-cookie")[-1].lower()
    for i in range(5):
        log_in(stranger, name if i % 2 else f"ghost-{i}", "guessing")
    assert log_in(stranger, name, password).status_code == 429
    assert log_in(doctor, name, password).status_code == 303


def test_one_session_flooding_the_event_queue_is_refused_before_it_fills_it(site, monkeypatch) -> None:
    import types

    import ui.access
    from ui.access import EVENT_BURST

    # The flood arrives at one instant: on a slow or busy machine, requests spread over seconds would refill the
    # bucket (EVENT_RATE a second) and the test would measure the machine, not the limit.
    monkeypatch.setattr(ui.access, "time", types.SimpleNamespace(monotonic=lambda: 1_000.0))
    client, db = site
    name, password = new_account(db)
    log_in(client, name, password)
    routes = ["/ui/gradio_api/queue/join", "/ui/gradio_api/call/worklist"]  # each way in to Gradio's queue counts
    answers = [client.post(routes[i % 2], json={}).status_code for i in range(int(EVENT_BURST) + 10)]
    assert 429 not in answers[:int(EVENT_BURST)] and set(answers[int(EVENT_BURST):]) == {429}
    other = TestClient(client.app)
    other_name, other_password = new_account(db)
    log_in(other, other_name, other_password)
    assert other.post("/ui/gradio_api/queue/join", json={}).status_code != 429  # another doctor is not held up


def test_an_open_tab_refreshing_itself_does_not_keep_its_session_alive(tmp_path: Path) -> None:
    import time

    app, db = build_site(tmp_path, SESSION_IDLE_MINUTES=0.04)  # 2.4 s
    name, password = new_account(db)
    tab, reader = TestClient(app), TestClient(app)
    log_in(tab, name, password)
    log_in(reader, name, password)
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        background = tab.get("/ui/data", headers={"Accept": "application/json", "Sec-Fetch-Mode": "cors"})
        navigation = reader.get("/ui/data", headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"})
        assert navigation.status_code == 200  # a person loading pages stays signed in
        time.sleep(0.3)
    assert background.status_code == 401 and background.json()["error"] == "session_expired"
