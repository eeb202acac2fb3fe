import pytest

from stream.errors import ConfigError
from stream.settings import Settings, settings_table


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert s.broker == "kafka://127.0.0.1:9092" and s.top_k == 20 and s.context_events == 50
    assert s.bootstrap_servers == "127.0.0.1:9092"


def test_values_are_parsed_and_typed():
    s = Settings.from_env(
        {
            "STREAMREC_BROKER": "kafka://a:1;b:2",
            "STREAMREC_TOP_K": "7",
            "STREAMREC_BATCH_MAX_WAIT_MS": "2.5",
            "STREAMREC_WEB_ENABLED": "false",
            "STREAMREC_EXCLUDE": "SEEN",
            "OTHER": "ignored",
        }
    )
    assert (s.top_k, s.batch_max_wait_ms, s.web_enabled, s.exclude) == (7, 2.5, False, "seen")
    assert s.bootstrap_servers == "a:1,b:2"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMREC_TOP_K": "many"}, "STREAMREC_TOP_K='many' is not a valid int"),
        ({"STREAMREC_TOP_K": "0"}, "STREAMREC_TOP_K must be >= 1"),
        ({"STREAMREC_PROVIDER": "tpu"}, "must be one of auto, cpu, cuda"),
        ({"STREAMREC_BROKER": "localhost:9092"}, "kafka://host:port"),
        ({"STREAMREC_SECURITY_PROTOCOL": "SASL_SSL"}, "STREAMREC_SASL_USERNAME"),
        ({"STREAMREC_WEB_ENABLED": "maybe"}, "not a valid bool"),
        ({"STREAMREC_DIVERSITY": "1.5"}, "STREAMREC_DIVERSITY must be between 0 and 1"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_password_is_never_in_repr_and_table_documents_every_variable():
    s = Settings.from_env(
        {
            "STREAMREC_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STREAMREC_SASL_USERNAME": "u",
            "STREAMREC_SASL_PASSWORD": "hunter2",
        }
    )
    assert "hunter2" not in repr(s)
    table = settings_table()
    assert "STREAMREC_MODEL_DIR" in table and "hunter2" not in table


def test_to_env_round_trips():
    s = Settings.from_env({"STREAMREC_TOP_K": "7", "STREAMREC_WEB_ENABLED": "false"})
    assert Settings.from_env(s.to_env()) == s


def test_tool_settings_live_apart_from_the_workers():
    from model_export.data.sources import DataSettings
    from stream.tools.cluster.broker import BrokerSettings

    env = {"STREAMREC_TANSU_BIN": "/opt/tansu", "STREAMREC_DATASETS_DIR": "/data"}
    assert BrokerSettings.from_env(env).tansu_bin == "/opt/tansu"
    assert DataSettings.from_env(env).datasets_dir == "/data"
    worker = Settings.table()
    assert "STREAMREC_TANSU_BIN" not in worker and "STREAMREC_DATASETS_DIR" not in worker


def test_the_exclusion_policy_is_one_type_for_every_reader():
    from typing import get_args

    from stream.settings import ExcludePolicy

    assert get_args(ExcludePolicy) == ("purchased", "seen")
    assert Settings.from_env({"STREAMREC_EXCLUDE": "seen"}).exclude == "seen"
    with pytest.raises(ConfigError, match="must be one of purchased, seen"):
        Settings.from_env({"STREAMREC_EXCLUDE": "everything"})
