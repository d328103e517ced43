"""Redaction of keys from error texts, whatever their length or characters."""

from __future__ import annotations

from trialrun import secrets


def test_a_short_key_is_masked_where_it_stands_as_a_token_only() -> None:
    secrets.remember("k3y")
    assert secrets.redact("401: bad key k3y given") == "401: bad key [redacted] given"
    assert secrets.redact("'Bearer k3y'") == "'Bearer [redacted]'"
    assert secrets.redact("k3yboard stays") == "k3yboard stays"


def test_a_key_with_a_backslash_is_masked_as_written_and_as_repr_escapes_it() -> None:
    key = "ab\\cd\\ef-99887766"
    secrets.remember(key)
    assert key not in secrets.redact(f"key {key} refused")
    assert repr(key)[1:-1] not in secrets.redact(f"{{'message': {key!r}}}")


def test_looks_secret_knows_names_and_shapes_but_not_references() -> None:
    assert secrets.looks_secret("api_token", "abc")
    assert secrets.looks_secret("user", "sk-ant-api03-abcdefgh")
    assert not secrets.looks_secret("api_token", "${env:TOKEN}")
    assert not secrets.looks_secret("stop_token", "</s>")
    assert not secrets.looks_secret("max_tokens", 32)
