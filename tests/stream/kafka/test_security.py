"""Security settings reach the Kafka clients; nothing deserialises by executing code."""

import re
import ssl

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from stream.errors import ConfigError
from stream.kafka.security import broker_credentials
from stream.settings import Settings
from tests.helpers import ROOT


def client_config(**env):
    settings = Settings.from_env({f"STREAMREC_{k.upper()}": v for k, v in env.items()})
    return credentials_to_aiokafka_auth(broker_credentials(settings))


def test_plaintext_by_default():
    assert client_config() == {"security_protocol": "PLAINTEXT"}


def test_ssl_settings_reach_the_client():
    config = client_config(security_protocol="SSL")
    assert config["security_protocol"] == "SSL"
    assert isinstance(config["ssl_context"], ssl.SSLContext)
    assert config["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512")],
)
def test_sasl_settings_reach_the_client(protocol, mechanism):
    config = client_config(
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username="svc-streamrec",
        sasl_password="s3cret",
    )
    assert config["security_protocol"] == protocol
    assert config["sasl_mechanism"] == mechanism
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == (
        "svc-streamrec",
        "s3cret",
    )
    assert (config["ssl_context"] is not None) == (protocol == "SASL_SSL")


def test_unreadable_tls_files_are_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="STREAMREC_SSL_CAFILE"):
        client_config(security_protocol="SSL", ssl_cafile=str(tmp_path / "missing.pem"))


def test_the_password_never_appears_in_the_settings_repr():
    settings = Settings.from_env(
        {
            "STREAMREC_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMREC_SASL_USERNAME": "u",
            "STREAMREC_SASL_PASSWORD": "s3cret",
        }
    )
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


#: Ways to run code while reading data: pickle and its users, unsafe YAML, eval/exec.
UNSAFE = re.compile(
    r"\bimport pickle\b|\bpickle\.loads?\(|\bcloudpickle\b|\bdill\b|\bmarshal\.loads?\("
    r"|\bjoblib\.load\(|torch\.load\(|allow_pickle\s*=\s*True|yaml\.load\("
    r"|(?<![.\w])eval\(|(?<![.\w])exec\("
)


def test_no_code_executing_deserialisation_anywhere():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in ("stream", "model_export")
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if UNSAFE.search(line)
    ]
    assert offenders == []
