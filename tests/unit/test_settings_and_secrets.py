from __future__ import annotations

from pathlib import Path

import pytest

from mail_pipeline.domain.secrets import InvalidSecretRef, validate_secret_ref
from mail_pipeline.settings import Environment, SettingsError, load_settings


def test_local_is_the_default_and_uses_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"MAIL_PIPELINE_DATA_DIR": str(tmp_path)})
    assert settings.environment is Environment.LOCAL
    assert settings.database_url == f"sqlite:///{tmp_path}/mail_pipeline.sqlite"
    assert settings.sandbox_path == tmp_path / "sandbox.sqlite"


def test_test_environment_prefers_the_test_database_url(tmp_path: Path) -> None:
    env = {
        "MAIL_PIPELINE_ENV": "test",
        "MAIL_PIPELINE_DATA_DIR": str(tmp_path),
        "MAIL_PIPELINE_TEST_DATABASE_URL": "postgresql://u@h/db",
    }
    assert load_settings(env).database_url == "postgresql://u@h/db"


def test_production_names_the_variable_instead_of_reading_it() -> None:
    settings = load_settings({"MAIL_PIPELINE_ENV": "Production"})
    assert settings.environment is Environment.PRODUCTION
    assert settings.database_url == "MAIL_PIPELINE_DATABASE_URL"


def test_unknown_environment_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="'staging' is not one of: local, test, production"):
        load_settings({"MAIL_PIPELINE_ENV": "staging"})


@pytest.mark.parametrize(
    "ref",
    [
        "KLAVIYO_API_KEY_ACME",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:klaviyo/acme",
        "ssm:/mail/klaviyo/acme",
    ],
)
def test_secret_refs_name_where_a_secret_lives(ref: str) -> None:
    assert validate_secret_ref(ref) == ref


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("pk_live_abc123", "looks like a credential"),
        ("sk_test_51H", "looks like a credential"),
        ("shpat_0123", "looks like a credential"),
        ("my api key", "is not an environment variable name"),
    ],
)
def test_credentials_are_refused(value: str, message: str) -> None:
    with pytest.raises(InvalidSecretRef, match=message):
        validate_secret_ref(value)
