"""The access middleware and login pages on a bare FastAPI app (no Gradio): who gets through, what they see."""

from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from tests.accounts import new_account, new_api_key
from ui.access import SESSION_COOKIE, install_access, principal_of
from xraylab.db.session import Database, upgrade_schema
from xraylab.settings import load_settings


@pytest.fixture()
def site(tmp_path: Path):
    settings = load_settings(STATE_DIR=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
                             LOGIN_MAX_FAILURES=3)
    db = Database(settings.DATABASE_URL)
    upgrade_schema(db.engine)
    app = FastAPI()
    install_access(app, db, settings)

    @app.get("/ui/data")
    async def data(request: Request) -> dict:
        return {"user": principal_of(request).name}

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
