import pytest

from stream.errors import BrokerError
from stream.tools.cluster.broker import EmbeddedBroker, find_tansu, port_open
from tests.integration.kafka_io import consume_until, produce


def test_session_broker_speaks_kafka(broker):
    assert port_open("127.0.0.1", broker.port)
    produce(broker.bootstrap_servers, "broker-smoke", [(b"k", b"v")])
    got = consume_until(
        broker.bootstrap_servers, ["broker-smoke"], lambda r: bool(r["broker-smoke"])
    )
    assert got["broker-smoke"] == [(b"k", b"v")]


def test_start_and_stop_on_a_free_port():
    broker = EmbeddedBroker().start()
    port = broker.port
    assert port_open("127.0.0.1", port) and broker.url == f"kafka://127.0.0.1:{port}"
    broker.stop()
    assert not port_open("127.0.0.1", port)


def test_a_taken_port_is_reported(broker):
    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(broker.port).start()


def test_bad_binary_override_is_reported(tmp_path):
    with pytest.raises(BrokerError, match="STREAMREC_TANSU_BIN"):
        find_tansu(str(tmp_path / "missing"))


def test_a_range_of_free_ports_is_free_throughout():
    import socket

    from stream.tools.cluster.broker import free_ports

    first = free_ports(4)
    for port in range(first, first + 4):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # each one binds
