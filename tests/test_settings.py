"""Settings from the environment: defaults, conversion, ranges, redaction."""

from __future__ import annotations

import pytest

from consumer.errors import ConfigError
from consumer.settings import ENVIRONMENT, Settings


def test_every_setting_has_a_default_that_loads() -> None:
    settings = Settings.from_env({})
    for name, (_variable, default) in ENVIRONMENT.items():
        value = getattr(settings, name)
        assert value == type(value)(default), name
    assert settings.timer_grace_s == 2.0
    assert not settings.crisp_configured


def test_variables_override_and_kafka_settings_pass_through() -> None:
    settings = Settings.from_env(
        {
            "LIFECYCLE_TIMER_GRACE_S": "300",
            "LIFECYCLE_BATCH_SIZE": "50",
            "LIFECYCLE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "LIFECYCLE_KAFKA_SESSION_TIMEOUT_MS": "6000",
        }
    )
    assert settings.timer_grace_s == 300.0
    assert settings.batch_size == 50
    assert settings.kafka_options == {
        "security.protocol": "SSL",
        "session.timeout.ms": "6000",
    }
    config = settings.kafka_config(**{"group.id": "g"})
    assert config["security.protocol"] == "SSL" and config["group.id"] == "g"


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("LIFECYCLE_TIMER_GRACE_S", "-1", "between 0 and 86400"),
        ("LIFECYCLE_BATCH_SIZE", "0", "between 1 and 100000"),
        ("LIFECYCLE_BATCH_SIZE", "2.5", "a whole number"),
        ("LIFECYCLE_STALL_TIMEOUT_S", "nan", "a number"),
        ("LIFECYCLE_HEALTH_PORT", "70000", "between 0 and 65535"),
        ("LIFECYCLE_REDIS_URL", "http://x", "must start with redis://"),
        ("LIFECYCLE_NAMESPACE", "a:b", "without braces, colons or spaces"),
        ("CRISP_TIER", "gold", "plugin or website"),
        ("CRISP_WEBSITE_ID", "w", "CRISP_IDENTIFIER and CRISP_KEY are needed"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: value})
    assert variable in str(refused.value)
    assert words in str(refused.value)


def test_the_start_up_description_hides_secrets() -> None:
    settings = Settings.from_env(
        {
            "CRISP_WEBSITE_ID": "w",
            "CRISP_IDENTIFIER": "i",
            "CRISP_KEY": "crisp-secret",
            "LIFECYCLE_REDIS_URL": "redis://user:redis-secret@127.0.0.1:6390/0",
            "LIFECYCLE_KAFKA_SASL_PASSWORD": "kafka-secret",
        }
    )
    described = repr(settings.describe())
    assert "secret" not in described
    assert "127.0.0.1:6390" in described
    assert "crisp-secret" not in repr(settings)
