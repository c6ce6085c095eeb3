"""Signature schemes against the senders' published vectors."""

from __future__ import annotations

import pytest
from agent_machine.domain.webhooks.signatures import (
    SignatureError,
    sign,
    verify_generic,
    verify_github,
    verify_jira,
    verify_sentry,
)

SECRET = "It's a Secret to Everybody"


def test_github_documented_vector() -> None:
    verify_github(b"Hello, World!", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", SECRET)
    verify_github(b"Hello, World!", "SHA256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17", SECRET)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha1=abc",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
        "sha256=é",
    ],
)
def test_github_refuses(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify_github(b"Hello, World!", header, SECRET)


def test_github_without_a_secret_fails_closed() -> None:
    with pytest.raises(SignatureError):
        verify_github(b"x", sign("", b"x"), None)


def test_jira_published_vector_and_method() -> None:
    good = "sha256=a4771c39fbe90f317c7824e83ddef3caae9cb3d976c214ace1f2937e133263c9"
    verify_jira(b"Hello World!", good, SECRET)
    for bad in (None, good.replace("sha256", "sha512"), good[len("sha256=") :]):
        with pytest.raises(SignatureError):
            verify_jira(b"Hello World!", bad, SECRET)


def test_sentry_bare_hex() -> None:
    wire = b'{"a":1}'
    verify_sentry(wire, sign(SECRET, wire, prefix=""), SECRET)
    with pytest.raises(SignatureError):
        verify_sentry(wire, sign(SECRET, wire), SECRET)  # prefixed: not Sentry's format
    with pytest.raises(SignatureError):
        verify_sentry(wire, None, SECRET)
    with pytest.raises(SignatureError):
        verify_sentry(wire, sign(SECRET, wire, prefix=""), None)


def test_generic_accepts_prefixed_or_bare() -> None:
    body = b"[]"
    verify_generic(body, sign("k" * 16, body), "k" * 16, "X-Sig")
    verify_generic(body, sign("k" * 16, body, prefix=""), "k" * 16, "X-Sig")
    with pytest.raises(SignatureError):
        verify_generic(body, "sha1=" + sign("k" * 16, body, prefix=""), "k" * 16, "X-Sig")
