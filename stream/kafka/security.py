"""Kafka client security: SSL and SASL settings turned into Faust and aiokafka options."""

from __future__ import annotations

import ssl
from typing import Any

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from stream.errors import ConfigError
from stream.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS context from the CA bundle and optional client certificate in ``settings``.

    Raises:
        ConfigError: if a named file cannot be read.
    """
    try:
        context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        msg = (
            "cannot load TLS files from STREAMREC_SSL_CAFILE/_CERTFILE/_KEYFILE "
            f"({type(exc).__name__}: {exc})"
        )
        raise ConfigError(msg) from exc
    return context


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """Credentials for Faust's ``broker_credentials`` (None for PLAINTEXT)."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(ssl_context(settings))
    return SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password,
        mechanism=settings.sasl_mechanism,
        ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
    )


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers and security options for an aiokafka client of the worker's own."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    return options
