"""DKIM signing (DKIM-1..4, LIST-5): verified with dkimpy against the public key,
broken by a changed signed header; the bytes the server got are the signed bytes."""

from __future__ import annotations

import base64
import re
import subprocess

import dkim
import pytest

from pipeline.delivery.worker import drain
from tests.delivery_kit import enqueue_test, smtp_toml
from tests.smtp_server import SMTPTestServer

REQUIRED = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
]


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dkim")
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub_der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return key, base64.b64encode(pub_der)


def _dns(public_b64):
    def dnsfunc(name, timeout=5):
        assert name == b"s2026._domainkey.news.example.com."
        return b"v=DKIM1; k=rsa; p=" + public_b64

    return dnsfunc


def test_signed_messages_verify_and_break_when_a_signed_header_changes(make_app, sqlite_url, dkim_key):
    key, public = dkim_key
    with SMTPTestServer() as server:
        toml = (
            smtp_toml(server, dkim_key_file=str(key))
            .replace("[delivery]", "[delivery]")
            .replace(
                "smtp_timeout = 5.0", 'smtp_timeout = 5.0\ndkim_selector = "s2026"\ndkim_domain = "news.example.com"'
            )
        )
        app = make_app(sqlite_url, toml)
        enqueue_test(app.engine, ["signed@example.org", "other@example.org"])
        assert drain(app.settings, app.engine).sent == 2
        for message in server.messages:
            data = message.data
            assert data.startswith(b"DKIM-Signature:")  # signed last: the signature is the top header
            assert dkim.verify(data, dnsfunc=_dns(public))
            header = data.split(b"\r\n\r\n", 1)[0].decode()
            sig = re.search(r"DKIM-Signature:(.*?)(?=\r\n\S)", header, re.S).group(1)
            sig = re.sub(r"\s+", "", sig)
            tags = dict(t.split("=", 1) for t in sig.split(";") if "=" in t)
            assert tags["a"] == "rsa-sha256"  # DKIM-1
            assert tags["c"] == "relaxed/relaxed"  # DKIM-4
            assert tags["d"] == "news.example.com"  # aligned with From (BULK-2)
            signed = [h.lower() for h in tags["h"].split(":")]
            for name in REQUIRED:  # DKIM-3, LIST-5
                assert name in signed
            tampered = data.replace(b"Subject: Test message", b"Subject: Tost message", 1)
            assert tampered != data
            assert not dkim.verify(tampered, dnsfunc=_dns(public))


def test_key_is_at_least_2048_bits_dkim1(dkim_key):
    key, _ = dkim_key
    text = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-noout", "-text"], check=True, capture_output=True, text=True
    ).stdout
    assert int(re.search(r"Private-Key: \((\d+) bit", text).group(1)) >= 2048


def test_dkim_selector_without_a_key_is_a_config_error(make_app, sqlite_url):
    from pipeline.delivery.email.dkim import signer_from_settings
    from pipeline.errors import ConfigError

    app = make_app(sqlite_url, '[email]\ndkim_selector = "s1"\n')
    with pytest.raises(ConfigError, match="no DKIM private key"):
        signer_from_settings(app.settings)


@pytest.mark.parametrize("bits", [1024, 1536])
def test_dkim1_keys_under_2048_bits_are_refused_with_a_clear_error(make_app, sqlite_url, tmp_path, bits):
    """Issue 16 item 5 (DKIM-1): a short key was accepted silently; now the signer is
    refused with the key size and how to make a new key."""
    from pipeline.delivery.email.dkim import signer_from_settings
    from pipeline.errors import ConfigError

    key = tmp_path / "short.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), str(bits)], check=True, capture_output=True)
    app = make_app(
        sqlite_url,
        f'[email]\ndkim_selector = "s1"\ndkim_domain = "news.example.com"\n[delivery]\ndkim_key_file = "{key}"\n',
    )
    with pytest.raises(ConfigError, match=f"has {bits} bits; at least 2048") as info:
        signer_from_settings(app.settings)
    assert "openssl genrsa" in info.value.hint


def test_dkim_garbage_key_is_a_config_error(make_app, sqlite_url, tmp_path):
    from pipeline.delivery.email.dkim import signer_from_settings
    from pipeline.errors import ConfigError

    key = tmp_path / "bad.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    app = make_app(sqlite_url, f'[email]\ndkim_selector = "s1"\n[delivery]\ndkim_key_file = "{key}"\n')
    with pytest.raises(ConfigError, match="cannot be read as an RSA key"):
        signer_from_settings(app.settings)


def test_dkim3_reply_to_is_signed_when_present(make_app, sqlite_url, dkim_key):
    """Issue 16 item 5: a digest with Reply-To is signed over it; changing the reply
    address breaks the signature."""
    from pipeline.digests import editions as digests

    from .digest_helpers import add_articles, add_subscriber, at

    key, public = dkim_key
    with SMTPTestServer() as server:
        toml = smtp_toml(server, dkim_key_file=str(key)).replace(
            "smtp_timeout = 5.0", 'smtp_timeout = 5.0\ndkim_selector = "s2026"\ndkim_domain = "news.example.com"'
        )
        app = make_app(sqlite_url, toml)
        app.settings.site.reply_to = "editors@news.example.com"
        add_articles(app, [{"slug": "a", "approved_at": at(days=1)}])
        add_subscriber(app, "r@example.com", confirmed_at=at(-1))
        digests.compose(app.engine, app.settings, "daily", now=at(days=1, hours=6))
        assert drain(app.settings, app.engine).sent == 1
        (message,) = server.messages
    data = message.data
    assert b"\r\nReply-To: editors@news.example.com\r\n" in data
    assert dkim.verify(data, dnsfunc=_dns(public))
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    h = re.search(r"\bh=([^;]+);", re.sub(r"\s+", "", header.split("DKIM-Signature:", 1)[1])).group(1)
    assert "reply-to" in [x.lower() for x in h.split(":")]
    tampered = data.replace(b"Reply-To: editors@news.example.com", b"Reply-To: thief@evil.example", 1)
    assert not dkim.verify(tampered, dnsfunc=_dns(public))
