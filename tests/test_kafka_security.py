"""Kafka TLS and SASL settings: validation, and their translation for every client.

There is no TLS or SASL broker here, so these tests stop at the clients' configuration: the
librdkafka properties every confluent-kafka client gets (and that the real librdkafka accepts
them), and the credentials Faust hands to aiokafka.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

import linewatch.kafka as kafka
from linewatch.config import Settings, load_settings
from linewatch.errors import ConfigError
from linewatch.streams.app import faust_settings

SASL = {"broker_url": "kafka-1:9093", "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "lw", "kafka_sasl_password": "s3cret"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a client certificate signed by it, the key encrypted with ``key-pw``."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=lw-test-ca")
    run("req", *ec, "-keyout", "client.key", "-passout", "pass:key-pw", "-out", "client.csr", "-subj", "/CN=lw")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.pem", "-days", "1")
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No LINEWATCH_* from the surroundings in these settings."""
    import os

    for key in [k for k in os.environ if k.startswith("LINEWATCH_")]:
        monkeypatch.delenv(key)
    return monkeypatch


def test_plaintext_is_the_default_and_adds_nothing(clean_env):
    s = Settings(broker_url="kafka:9092")
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert s.kafka_client_config() == {} and s.kafka_env() == {} and s.kafka_ssl_context() is None
    assert "broker_credentials" not in faust_settings(s, "kafka:9092")


def test_sasl_over_tls_becomes_librdkafka_properties(clean_env, pki):
    s = Settings(**SASL, kafka_ssl_cafile=pki["ca"])
    assert s.kafka_client_config() == {
        "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "lw",
        "sasl.password": "s3cret", "ssl.ca.location": str(pki["ca"]),
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_every_mechanism_over_plaintext_sasl(clean_env, mechanism):
    s = Settings(**{**SASL, "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": mechanism})
    assert s.kafka_client_config() == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": mechanism,
                                       "sasl.username": "lw", "sasl.password": "s3cret"}


def test_mutual_tls_becomes_librdkafka_properties(clean_env, pki):
    s = Settings(broker_url="kafka:9093", kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"],
                 kafka_ssl_certfile=pki["cert"], kafka_ssl_keyfile=pki["key"], kafka_ssl_key_password="key-pw")
    assert s.kafka_client_config() == {
        "security.protocol": "SSL", "ssl.ca.location": str(pki["ca"]),
        "ssl.certificate.location": str(pki["cert"]), "ssl.key.location": str(pki["key"]),
        "ssl.key.password": "key-pw",
    }


def test_settings_come_from_the_environment_and_the_toml_file(clean_env, tmp_path, pki):
    clean_env.setenv("LINEWATCH_BROKER_URL", "kafka-1:9093")
    clean_env.setenv("LINEWATCH_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")  # case does not matter
    clean_env.setenv("LINEWATCH_KAFKA_SASL_MECHANISM", "scram-sha-256")
    clean_env.setenv("LINEWATCH_KAFKA_SASL_PASSWORD", "from-env")
    f = tmp_path / "lw.toml"
    f.write_text(f'kafka_sasl_username = "from-file"\nkafka_ssl_cafile = "{pki["ca"]}"\n')
    s = load_settings(f)
    assert s.kafka_client_config() == {
        "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "from-file",
        "sasl.password": "from-env", "ssl.ca.location": str(pki["ca"]),
    }


def test_a_child_process_gets_the_same_settings_from_its_environment(clean_env, pki):
    s = Settings(**SASL, kafka_ssl_cafile=pki["ca"])
    env = s.kafka_env()
    assert env["LINEWATCH_KAFKA_SASL_PASSWORD"] == "s3cret"
    for key, value in env.items():
        clean_env.setenv(key, value)
    child = Settings(broker_url=s.broker_url)
    assert child.kafka_client_config() == s.kafka_client_config()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_sasl_username": None}, "needs kafka_sasl_username"),
        ({"kafka_sasl_password": None}, "needs kafka_sasl_password"),
        ({"kafka_sasl_mechanism": None}, "needs kafka_sasl_mechanism"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"kafka_security_protocol": "SSL"}, "use SASL_SSL"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"broker_url": None}, "needs an external broker"),
        ({"kafka_ssl_cafile": "/no/such/ca.pem"}, "not a readable file"),
    ],
)
def test_half_configured_security_is_a_clear_error(clean_env, values, message):
    with pytest.raises(ConfigError, match=message):
        _load({**SASL, **values})


def _load(values: dict) -> Settings:
    """Settings from ``values`` (None = not set), with load_settings' error type."""
    try:
        return Settings(**{k: v for k, v in values.items() if v is not None})
    except ValueError as e:
        raise ConfigError(str(e)) from e


def test_tls_files_need_a_tls_protocol_and_go_together(clean_env, pki):
    with pytest.raises(ConfigError, match="use SSL or SASL_SSL"):
        _load({**SASL, "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": pki["ca"]})
    with pytest.raises(ConfigError, match="go together"):
        _load({"broker_url": "k:9093", "kafka_security_protocol": "SSL", "kafka_ssl_certfile": pki["cert"]})
    with pytest.raises(ConfigError, match="without kafka_ssl_keyfile"):
        _load({"broker_url": "k:9093", "kafka_security_protocol": "SSL", "kafka_ssl_key_password": "x"})


def test_secrets_are_masked_and_kept_out_of_repr(clean_env):
    s = Settings(**SASL, database_url="host=db user=lw password='a b'")
    masked = s.masked()
    assert masked["kafka_sasl_password"] == "***" and masked["kafka_sasl_username"] == "lw"
    assert masked["database_url"] == "host=db user=lw password=***"
    assert "s3cret" not in repr(s) and "s3cret" not in str(masked)


def test_every_confluent_kafka_client_gets_the_properties(clean_env, monkeypatch):
    seen: dict[str, dict] = {}

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, config: dict) -> object:
            seen[self.name] = dict(config)
            raise RuntimeError("recorded")  # stop before anything talks to a broker

    for name in ("Producer", "Consumer", "AdminClient"):
        monkeypatch.setattr(kafka, name, Recorder(name))
    security = Settings(**SASL).kafka_client_config()
    for call in (lambda: kafka.make_producer("k:9093", security=security),
                 lambda: kafka.Publisher("k:9093", security=security),
                 lambda: kafka.make_consumer("k:9093", "g", security=security),
                 lambda: next(kafka.read_to_end("k:9093", "signals", group_id="g", security=security)),
                 lambda: kafka.ensure_topics("k:9093", security=security)):
        seen.clear()
        with pytest.raises(RuntimeError, match="recorded"):
            call()
        (config,) = seen.values()
        assert security.items() <= config.items() and config["bootstrap.servers"] == "k:9093"

    # Without security settings every client is configured exactly as before they existed.
    for call in (lambda: kafka.make_producer("k:9092"), lambda: kafka.make_consumer("k:9092", "g"),
                 lambda: kafka.ensure_topics("k:9092")):
        seen.clear()
        with pytest.raises(RuntimeError):
            call()
        (config,) = seen.values()
        assert not {k for k in config if k.startswith(("security.", "sasl.", "ssl."))}


def test_the_real_librdkafka_accepts_the_properties(clean_env, pki):
    """Unknown or unsupported properties (a build without SASL/SCRAM or TLS) fail when a client is made."""
    sasl = Settings(**SASL, kafka_ssl_cafile=pki["ca"]).kafka_client_config()
    mtls = Settings(broker_url="k:9093", kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"],
                    kafka_ssl_certfile=pki["cert"], kafka_ssl_keyfile=pki["key"],
                    kafka_ssl_key_password="key-pw").kafka_client_config()
    for security in (sasl, mtls):
        base = {"bootstrap.servers": "127.0.0.1:1", **security}
        Producer(base).flush(0)
        Consumer({**base, "group.id": "lw-test"}).close()
        AdminClient(base)


def test_faust_gets_sasl_credentials_with_a_verifying_tls_context(clean_env, pki, tmp_path):
    s = Settings(**SASL, kafka_ssl_cafile=pki["ca"], data_dir=tmp_path)
    auth = credentials_to_aiokafka_auth(faust_settings(s, "kafka-1:9093")["broker_credentials"])
    assert {k: auth[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username",
                                 "sasl_plain_password")} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "lw",
        "sasl_plain_password": "s3cret"}
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_faust_over_plaintext_sasl_has_no_tls_context(clean_env, tmp_path):
    s = Settings(**{**SASL, "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"},
                 data_dir=tmp_path)
    auth = credentials_to_aiokafka_auth(faust_settings(s, "kafka-1:9092")["broker_credentials"])
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["ssl_context"]) == ("SASL_PLAINTEXT", "PLAIN",
                                                                                         None)


def test_faust_gets_a_client_certificate_for_mutual_tls(clean_env, pki, tmp_path):
    s = Settings(broker_url="k:9093", kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"],
                 kafka_ssl_certfile=pki["cert"], kafka_ssl_keyfile=pki["key"], kafka_ssl_key_password="key-pw",
                 data_dir=tmp_path)
    auth = credentials_to_aiokafka_auth(faust_settings(s, "k:9093")["broker_credentials"])
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)
    wrong = s.model_copy(update={"kafka_ssl_key_password": None})
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files"):
        wrong.kafka_ssl_context()
