"""The one scrubber: configured secrets in every spelling, key-shaped strings, log records."""

from __future__ import annotations

import asyncio
import base64
import logging
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridfast import redact
from hybridfast.config import Config
from hybridfast.redact import REDACTED, Scrubber

# Built from parts so no key-shaped literal sits in the source.
PROVIDER_KEY = "-".join(["sk", "test", "Zq8VxR2mLk4Jp0Tn6Wc"])
MASTER = "hunter2-master-" + "x7Qp9"


@pytest.fixture
def scrubber() -> Scrubber:
    return Scrubber([PROVIDER_KEY, MASTER, "postgresql://ledger:pg-pass-88@db/ledger"])


@pytest.mark.parametrize(
    "spelling",
    [
        PROVIDER_KEY,
        PROVIDER_KEY.upper(),
        PROVIDER_KEY.lower(),
        MASTER.upper(),
        MASTER.swapcase(),
        quote(MASTER, safe=""),
        base64.b64encode(MASTER.encode()).decode(),
        base64.urlsafe_b64encode(PROVIDER_KEY.encode()).decode(),
        # Inside a longer base64 text, at each alignment (HTTP Basic auth).
        base64.b64encode(b"u:" + MASTER.encode()).decode(),
        base64.b64encode(b"us:" + MASTER.encode()).decode(),
        base64.b64encode(b"use:" + MASTER.encode() + b"!").decode(),
        "pg-pass-88",
    ],
)
def test_every_spelling_of_a_configured_secret_is_removed(
    scrubber: Scrubber, spelling: str
) -> None:
    text = f"upstream said: invalid credential {spelling} (request 7)"
    out = scrubber.scrub(text)
    assert REDACTED in out
    assert spelling not in out
    for secret in (PROVIDER_KEY, MASTER, "pg-pass-88"):
        assert secret.lower() not in out.lower()


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided: " + "sk-proj-" + "*" * 20 + "AbCd",
        "key " + "sk-ant-api03-" + "A" * 40,
        "aws " + "AKIA" + "ABCDEFGHIJKLMNOP",
        "Authorization: Bearer some.opaque-token_value",
        "x-api-key: anything-at-all-1",
    ],
)
def test_key_shaped_strings_are_removed_without_configuration(text: str) -> None:
    out = Scrubber().scrub(text)
    assert REDACTED in out


def test_ordinary_text_is_untouched(scrubber: Scrubber) -> None:
    text = (
        "the model answered 1234 tokens; task-force skills; risk-free; "
        "send server.master_key as the bearer token (basic auth is off)"
    )
    assert scrubber.scrub(text) == text


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(max_size=20), suffix=st.text(max_size=20))
def test_secret_never_survives_surrounding_text(prefix: str, suffix: str) -> None:
    s = Scrubber([MASTER])
    assert MASTER.lower() not in s.scrub(prefix + MASTER + suffix).lower()


def test_bytes_that_are_not_utf8_survive_scrubbing(scrubber: Scrubber) -> None:
    data = b"\xff\xfe " + MASTER.encode() + b" \x80"
    out = scrubber.scrub_bytes(data)
    assert MASTER.encode() not in out
    assert out.startswith(b"\xff\xfe ")


def test_log_records_are_scrubbed_whichever_logger_emits_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redact.configure([MASTER])
    redact.install_log_scrubbing()
    with caplog.at_level(logging.INFO):
        logging.getLogger("aiohttp.server").error("bad header: %r", f"Bearer {MASTER}")
        logging.getLogger("some.child.logger").info("token=%s", MASTER.upper())
        try:
            raise ValueError(f"failed with {MASTER}")
        except ValueError:
            logging.getLogger("hybridfast.x").exception("boom")
    assert MASTER.lower() not in caplog.text.lower()
    assert caplog.text.count(REDACTED) >= 3


def test_scrub_with_adds_a_providers_own_key() -> None:
    own = "own-provider-key-" + "Q1w2E3"
    assert own not in redact.scrub_with(f"echo {own}", [own])


async def test_aiohttp_does_not_echo_a_malformed_header_with_its_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp's answer to an unparsable request quoted the header line, key included; its
    log record did too."""
    redact.install_http_error_scrubbing()
    redact.install_log_scrubbing()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    secret = "unconfigured-" + "Zr7Yq2Wp5"
    try:
        with caplog.at_level(logging.DEBUG):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + secret.encode()
                + b"\x01\r\nContent-Length: 2\r\n\r\n{}"
            )
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.0 400")
    assert b'"code":"ERR_BAD_HTTP"' in answer
    assert secret.encode() not in answer
    assert secret not in caplog.text


def test_plugin_options_named_like_secrets_and_url_passwords_are_secrets() -> None:
    config = Config()
    config.cache.options = {"url": "redis://:cache-pw-4411@h:6379/0", "prefix": "hf"}
    config.plugins.options = {
        "audit": {
            "token": "audit-token-77",
            "nested": {"db_password": "pw-9911", "retries": 3},
            "headers": [{"X-Api-Key": "hdr-key-55"}],
            "name": "plain-name",
        }
    }
    secrets = redact.config_secrets(config)
    for secret in ("cache-pw-4411", "audit-token-77", "pw-9911", "hdr-key-55"):
        assert secret in secrets
    assert "plain-name" not in secrets
    assert "hf" not in secrets
