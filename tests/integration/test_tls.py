"""TLS: `serve --tls-cert/--tls-key` answers the official openai SDK over HTTPS when the
client trusts the test CA (and is refused when it does not); https upstreams are verified by
default: one signed by a CA the gateway trusts (`$SSL_CERT_FILE`) answers, the same upstream
without that trust is refused. The CA and certificates are made here with `cryptography`."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hybridfast.config import TlsConfig, parse_config
from hybridfast.errors import ConfigError
from hybridfast.security.tls import server_context
from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.background import BackgroundLoop
from tests.fakes.server import free_port

MASTER = "sk-hybridfast-test-master"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for localhost / 127.0.0.1 signed by it: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("hybridfast test CA"))
        .issuer_name(_name("hybridfast test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.contextmanager
def serve(
    config_text: str, workdir: Path, args: list[str], env: dict[str, str], health_ssl: Any = None
) -> Iterator[str]:
    """A `serve` process; yields its base URL once /healthz answers (over TLS if asked)."""
    port = free_port()
    (workdir / "hybridfast.yaml").write_text(config_text)
    scheme = "https" if health_ssl is not None else "http"
    url = f"{scheme}://localhost:{port}"
    log = (workdir / f"serve-{port}.log").open("wb")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    full_env.pop("HYBRIDFAST_CONFIG", None)
    cmd = [sys.executable, "-m", "hybridfast", "serve", "--config", "hybridfast.yaml"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), *args], cwd=workdir, env=full_env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError((workdir / f"serve-{port}.log").read_text())
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1, context=health_ssl):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_serve_over_tls_with_the_openai_sdk(
    fake_openai: FakeUpstream, pki: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ca, cert, key = pki
    trusting = ssl.create_default_context(cafile=str(ca))
    text = fake_config(fake_openai, server=f"  master_key: {MASTER}")
    args = ["--tls-cert", str(cert), "--tls-key", str(key)]
    with serve(text, tmp_path, args, {}, health_ssl=trusting) as url:
        client = openai.OpenAI(
            base_url=url + "/v1",
            api_key=MASTER,
            max_retries=0,
            http_client=httpx.Client(verify=trusting),
        )
        answer = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == DEFAULT_REPLY
        untrusting = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0)
        with pytest.raises(openai.APIConnectionError):
            untrusting.models.list()
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
            httpx.get(url.replace("https", "http") + "/healthz", timeout=5)


@contextlib.contextmanager
def tls_upstream(pki: tuple[Path, Path, Path]) -> Iterator[tuple[FakeUpstream, str]]:
    """The OpenAI fake served over HTTPS with the test CA's certificate."""
    _, cert, key = pki
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fake = FakeUpstream("openai")
    loop = BackgroundLoop()
    port = free_port()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(fake.app(), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        return runner

    runner = loop.run(start())
    try:
        yield fake, f"https://localhost:{port}/v1"
    finally:
        loop.run(runner.cleanup())
        loop.close()


def test_https_upstreams_are_verified(pki: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ca = pki[0]
    with tls_upstream(pki) as (fake, base_url):
        text = fake_config(fake, server=f"  master_key: {MASTER}")
        text = text.replace(f"base_url: {fake.url}", f"base_url: {base_url}")
        assert base_url in text
        with serve(text, tmp_path, [], {"SSL_CERT_FILE": str(ca)}) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0)
            answer = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "over tls"}]
            )
            assert answer.choices[0].message.content == DEFAULT_REPLY
        assert len(fake.requests) == 1
        # The same upstream, but the gateway does not trust its CA: refused, not called.
        with serve(text, tmp_path, [], {"SSL_CERT_FILE": "/nonexistent"}) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0)
            with pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": "over tls"}]
                )
            assert refused.value.status_code == 502
        assert len(fake.requests) == 1


def test_tls_config_errors(pki: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ca, cert, key = pki
    with pytest.raises(ConfigError, match="both cert and key"):
        parse_config(f"tls: {{cert: '{cert}'}}\n")
    with pytest.raises(ConfigError, match="no such file"):
        server_context(TlsConfig(cert=str(tmp_path / "absent.pem"), key=str(key)))
    with pytest.raises(ConfigError, match="cannot load the certificate"):
        server_context(TlsConfig(cert=str(cert), key=str(ca)))  # a certificate is no key
    assert server_context(TlsConfig()) is None
    context = server_context(TlsConfig(cert=str(cert), key=str(key), min_version="1.3"))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
