"""xraylab.redact: a URL's user, password and token-like query parameters never appear in what is shown."""

import pytest

from xraylab.redact import MASK, redact_url, scrub, url_secrets


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:secret@prometheus.local:9090/", "http://***@prometheus.local:9090/"),
    ("https://user@h/x", "https://***@h/x"),
    ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
    ("https://hooks.local/alert?token=secret&room=7", "https://hooks.local/alert?room=7"),
    ("https://h/p?X-Amz-Signature=secret&X-Amz-Credential=secret&api_key=secret&a=1", "https://h/p?a=1"),
    ("https://h/p#access_token=secret", "https://h/p"),
    ("mysql+pymysql://xraylab:secret@db:3306/x?charset=utf8mb4", "mysql+pymysql://***@db:3306/x?charset=utf8mb4"),
    ("http://[::1:9090/?token=secret", "http://[::1:9090/"),  # not splittable: still no token
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "secret" not in redact_url(url)


def test_url_secrets_are_the_password_and_token_values_as_written_and_decoded() -> None:
    assert url_secrets("http://u:p%40ss@h/?token=t%2Bk&page=2") == ["p%40ss", "t%2Bk", "p@ss", "t+k"]
    assert url_secrets("http://h/") == []


def test_scrub_takes_the_url_and_its_parts_out_of_a_message() -> None:
    url = "http://user:p%40secret@127.0.0.1/?token=tok3n"
    message = (f"GET {url} failed: nonnumeric port: 'p%40secret@127.0.0.1' (password p@secret, token tok3n); "
               "see also ftp://other:pw@x/")
    clean = scrub(message, url)
    assert not any(s in clean for s in ("secret", "tok3n", "pw@", "other:"))
    assert "http://***@127.0.0.1/" in clean and MASK in clean
    assert scrub("no URL here", "") == "no URL here"
