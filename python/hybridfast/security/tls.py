"""TLS for `serve` (`tls.cert` / `tls.key`, or `serve --tls-cert/--tls-key`).

Upstream connections need no setting: the HTTP client verifies every https upstream against
the system's trusted CAs (Python's default context, which honours `$SSL_CERT_FILE` and
`$SSL_CERT_DIR` for a private CA) and refuses one it cannot verify.
"""

from __future__ import annotations

import ssl

from hybridfast.config import TlsConfig
from hybridfast.errors import ConfigError


def server_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None to serve plain HTTP."""
    if not tls.cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except FileNotFoundError as exc:
        raise ConfigError(f"tls: {exc.filename}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"tls: cannot load the certificate {tls.cert} and key {tls.key} ({exc})",
            hint="both PEM; the key must match the certificate and must not need a password",
        ) from None
    return context
