"""Credentials kept out of what is stored, shown or logged. ``redact_url`` gives a URL without its user and
password (``***@``), its token-like query parameters and its fragment. ``scrub`` takes them out of a message
too: an exception's text may quote a URL, or a part of one (``nonnumeric port: 'secret@host'``). Use them
wherever an error or a log line carries a URL from the settings (Prometheus, a webhook, a PACS)."""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["MASK", "redact_url", "scrub", "url_credential", "url_secrets"]

MASK = "***"
# A query parameter whose name says it holds a credential: dropped from a URL, its value masked in a message.
_TOKEN_NAME = re.compile(r"token|key|secret|pass|pwd|auth|sig|credential|session|jwt|bearer|cookie", re.I)
# user[:password]@ right after a scheme's "//", in any text.
_USERINFO = re.compile(r"(?<=//)[^/\s@?#'\"]+@")


def _token_like(name: str) -> bool:
    return bool(_TOKEN_NAME.search(urllib.parse.unquote_plus(name)))


def redact_url(url: str) -> str:
    """``url`` without credentials: ``user:password@`` becomes ``***@``; token-like query parameters
    (``token``, ``api_key``, ``X-Amz-Signature``, ...) and the fragment are dropped. Never raises."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # not a URL Python can split (a bad IPv6 literal): mask what looks like userinfo
        return _USERINFO.sub(MASK + "@", url.split("?", 1)[0].split("#", 1)[0])
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = "&".join(p for p in parts.query.split("&") if p and not _token_like(p.split("=", 1)[0]))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_credential(value: str) -> str | None:
    """The password (or the user, when there is no password) inside a URL's ``user:password@``; None when
    ``value`` is no URL or carries none."""
    if "://" not in value:
        return None
    try:
        parts = urllib.parse.urlsplit(value.strip())
    except ValueError:
        return None
    return parts.password if parts.password is not None else parts.username


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: its password and the values of its token-like query parameters (and the
    fragment's), each as written and decoded, longest first."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return []
    found: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        if ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
    for pair in (parts.query + "&" + parts.fragment).split("&"):
        name, _, value = pair.partition("=")
        if value and _token_like(name):
            found.add(value)
    found |= {urllib.parse.unquote_plus(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, *urls: str) -> str:
    """``text`` with each of ``urls`` replaced by ``redact_url`` of it, their secrets (``url_secrets``) by
    ``***``, and any other ``scheme://user:password@`` it quotes masked."""
    for url in urls:
        if not url:
            continue
        for form in {url, url.rstrip("/")}:
            if form:
                text = text.replace(form, redact_url(form))
        for secret in url_secrets(url):
            text = text.replace(secret, MASK)
    return _USERINFO.sub(MASK + "@", text)
