"""Config: every variable documented, bad values named, secrets never shown."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from adplatform.config import (
    ARCHIVE_JAVA_OPTIONS,
    DEV_TOKEN_KEYS,
    LOCAL_STACK_PORTS,
    ConfigError,
    dev_key_warning,
    load_config,
    read_dotenv,
    redact_url,
)
from devstack.paths import KAFKA_PORT, PG_PORT, REDIS_PORT

ROOT = Path(__file__).resolve().parents[2]
NO_DOTENV = ROOT / "does-not-exist"


def test_every_variable_is_documented_in_env_example() -> None:
    # The platform's config, and the admin service's own settings (read the same way, from ADP_*).
    source = "".join((ROOT / path).read_text() for path in ("adplatform/config.py", "admin/settings.py"))
    used = set(re.findall(r'"([A-Z_]+)"', source))
    read = {name for name in used if f'PREFIX + "{name}"' in source}
    read |= set(re.findall(r'_(?:int|number)\(env, "([A-Z_]+)"', source))
    documented = set(re.findall(r"^ADP_([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read and read <= documented
    assert documented <= read, "documented variables that nothing reads"


def test_env_example_is_a_valid_config() -> None:
    values = read_dotenv(ROOT / ".env.example")
    config = load_config({k: v for k, v in values.items() if v}, dotenv=NO_DOTENV)
    assert config.kafka_bootstrap == "127.0.0.1:19092"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAFKA_PARTITIONS", "four"),
        ("TOKEN_KEYS", "short:abc"),
        ("RESERVE_CPM", "-1"),
        ("LOG_LEVEL", "LOUD"),
        ("ADMIN_URL", "127.0.0.1:8100"),
        ("WAREHOUSE_METASTORE_SCHEMA", "meta; DROP"),
        ("WAREHOUSE_LOAD_INTERVAL_S", "-5"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"ADP_{name}"):
        load_config({f"ADP_{name}": value}, dotenv=NO_DOTENV)


def test_secrets_stay_out_of_reprs() -> None:
    config = load_config(
        {
            "ADP_PG_DSN": "postgresql://app:hunter2-secret@db:5432/adplatform",
            "ADP_REDIS_URL": "redis://:redis-secret@cache:6379/0",
            "ADP_TOKEN_KEYS": "k1:token-secret-0123456789",
            "ADP_API_KEY": "adp_kid.api-key-secret",
        },
        dotenv=NO_DOTENV,
    )
    text = repr(config)
    assert config.api_key == "adp_kid.api-key-secret"
    for secret in ("hunter2-secret", "redis-secret", "token-secret-0123456789", "api-key-secret"):
        assert secret not in text
    assert redact_url(config.pg_dsn) == "postgresql://app:***@db:5432/adplatform"
    assert "redis-secret" not in config.redis_url_redacted


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nADP_DEFAULT_COUNTRY='Nepal'\nexport ADP_SLOT_S=60\n")
    assert load_config({}, dotenv=dotenv).default_country == "Nepal"
    assert load_config({}, dotenv=dotenv).slot_s == 60
    assert load_config({"ADP_SLOT_S": "120"}, dotenv=dotenv).slot_s == 120
    dotenv.write_text("not a line\n")
    with pytest.raises(ConfigError, match=r"\.env:1"):
        load_config({}, dotenv=dotenv)


def test_a_namespaced_config_moves_every_topic_and_group_and_nothing_else(tmp_path: Path) -> None:
    base = load_config({}, dotenv=NO_DOTENV)
    run = base.namespaced("run1-", archive_dir=tmp_path / "archive")
    assert all(t.startswith("run1-") for t in run.topics.all())
    assert set(run.topics.all()) == {f"run1-{t}" for t in base.topics.all()}
    assert run.group("ledger") == "run1-ledger"
    assert run.archive_dir == tmp_path / "archive"
    assert base.namespaced("run2-").archive_dir == base.archive_dir
    services = ("redis_url", "pg_dsn", "kafka_bootstrap", "token_keys")
    assert [getattr(run, name) for name in services] == [getattr(base, name) for name in services]


def test_dotenv_inline_comments_and_quotes_as_in_a_shell(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        'ADP_SLOT_S=600  # note\nADP_DEFAULT_COUNTRY="India" # x\nADP_TOPIC_PREFIX=run#1\n'
        "ADP_TOKEN_KEYS='k1:dollar${HOME}-0123456789'\n"
    )
    config = load_config({}, dotenv=dotenv)
    assert config.slot_s == 600
    assert config.default_country == "India"
    assert config.topics.prefix == "run#1"  # a '#' inside a value is not a comment
    assert config.token_keys[0].secret == b"dollar${HOME}-0123456789"  # taken literally
    assert load_config({"ADP_DEFAULT_COUNTRY": "Nepal"}, dotenv=dotenv).default_country == "Nepal"


LOCAL = {
    "ADP_PG_DSN": "postgresql://postgres@127.0.0.1:15432/adplatform_test_x",
    "ADP_REDIS_URL": "redis://localhost:16379/3",
    "ADP_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
}
OWN_KEY = {"ADP_TOKEN_KEYS": "k1:a-secret-key-of-our-own"}


@pytest.mark.parametrize(
    ("env", "warns"),
    [
        ({}, False),  # the defaults: the local stack
        (LOCAL, False),
        (LOCAL | {"ADP_TOKEN_KEYS": DEV_TOKEN_KEYS}, False),
        (LOCAL | {"ADP_ENV": "production"}, True),
        (LOCAL | {"ADP_PG_DSN": "postgresql://postgres@db.internal:5432/adplatform"}, True),
        (LOCAL | {"ADP_REDIS_URL": "redis://127.0.0.1:6379/0"}, True),  # loopback, not the stack's port
        (LOCAL | {"ADP_KAFKA_BOOTSTRAP": "127.0.0.1:19092,10.0.0.5:9092"}, True),
        (
            LOCAL
            | {
                "ADP_KAFKA_BOOTSTRAP": "kafka:9092",
                "ADP_TOKEN_KEYS": f"k2:newer-key-0123456789,{DEV_TOKEN_KEYS}",
            },
            True,
        ),
        (LOCAL | {"ADP_ENV": "production"} | OWN_KEY, False),
        ({"ADP_PG_DSN": "postgresql://postgres@db:5432/x"} | OWN_KEY, False),
    ],
)
def test_the_development_key_warning(env: dict[str, str], warns: bool) -> None:
    warning = dev_key_warning(load_config(env, dotenv=NO_DOTENV))
    assert (warning is not None) == warns
    if warning is not None:
        assert "ADP_TOKEN_KEYS" in warning and DEV_TOKEN_KEYS.partition(":")[2] not in warning


def test_serve_logs_the_development_key_warning_once(caplog: pytest.LogCaptureFixture) -> None:
    from adplatform.cli.common import warn_if_dev_key

    with caplog.at_level(logging.WARNING):
        warn_if_dev_key(load_config(LOCAL, dotenv=NO_DOTENV))
        assert caplog.records == []
        warn_if_dev_key(load_config(LOCAL | {"ADP_ENV": "production"}, dotenv=NO_DOTENV))
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "development token key" in caplog.records[0].getMessage()
    source = (ROOT / "adplatform" / "cli" / "serve.py").read_text()
    assert "warn_if_dev_key(cfg)" in source


def test_adp_env_is_checked_and_the_local_ports_are_the_stacks() -> None:
    with pytest.raises(ConfigError, match="ADP_ENV"):
        load_config({"ADP_ENV": "prod"}, dotenv=NO_DOTENV)
    assert LOCAL_STACK_PORTS == {"postgres": PG_PORT, "redis": REDIS_PORT, "kafka": KAFKA_PORT}


def test_the_archive_jvm_compiles_with_c1_alone_unless_told_otherwise() -> None:
    assert load_config({}, dotenv=NO_DOTENV).archive_java_options == ARCHIVE_JAVA_OPTIONS
    assert ARCHIVE_JAVA_OPTIONS == "-XX:TieredStopAtLevel=1"
    set_to = load_config({"ADP_ARCHIVE_JAVA_OPTIONS": " -Xmx2g "}, dotenv=NO_DOTENV)
    assert set_to.archive_java_options == "-Xmx2g"
    assert load_config({"ADP_ARCHIVE_JAVA_OPTIONS": ""}, dotenv=NO_DOTENV).archive_java_options == ""
