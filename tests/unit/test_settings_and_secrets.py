from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mail_pipeline.domain.environments import Environment, database_refusal, stamp_refusal
from mail_pipeline.domain.secrets import (
    InvalidSecretRef,
    environment_variable,
    secrets_manager_id,
    validate_secret_ref,
)
from mail_pipeline.integrations.errors import AuthenticationFailed
from mail_pipeline.integrations.secrets import EnvironmentSecrets
from mail_pipeline.settings import (
    ProductionConfigError,
    SettingsError,
    check_production,
    load_settings,
    organization_secret_variables,
    production_problems,
)
from tests.environments import PRODUCTION, TEST_SETTINGS

PACKAGE = Path(__file__).resolve().parents[2] / "mail_pipeline"


# -- settings ---------------------------------------------------------------------------


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


def test_production_reads_the_database_url_but_never_shows_it() -> None:
    settings = load_settings({**PRODUCTION, "MAIL_PIPELINE_ENV": "Production"})
    assert settings.environment is Environment.PRODUCTION
    assert settings.database_url == PRODUCTION["MAIL_PIPELINE_DATABASE_URL"]
    assert "pw@db.internal" not in repr(settings)


def test_settings_keep_no_secret_value() -> None:
    settings = load_settings(PRODUCTION)
    text = repr(settings)
    for name in ("LOB_API_KEY", "LOB_WEBHOOK_SECRET", "STRIPE_API_KEY", "CLOUDFLARE_IMAGES_TOKEN"):
        assert name in text
        assert PRODUCTION[name] not in text
    lob = settings.vendors.printer("lob")
    assert lob.api_key.is_set and lob.webhook_secret.is_set
    assert not lob.api_key.is_test_credential


def test_unknown_environment_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="'staging' is not one of: local, test, production"):
        load_settings({"MAIL_PIPELINE_ENV": "staging"})


def test_only_settings_reads_the_environment() -> None:
    readers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"os\.environ|getenv", path.read_text())
    )
    # failpoints.py reads only MAIL_PIPELINE_FAILPOINTS, which the crash-injection benchmark
    # sets for its processes (docs/reliability.md); production never sets it.
    assert readers == ["failpoints.py", "settings.py"]


def test_organization_secret_variables_hold_nothing_else() -> None:
    environ = {
        "MAIL_PIPELINE_ORG_1_KLAVIYO_API_KEY": "pk_a",
        "STRIPE_API_KEY": "sk_live_x",
        "KLAVIYO_API_KEY_ACME": "pk_old",
    }
    assert organization_secret_variables(environ) == {"MAIL_PIPELINE_ORG_1_KLAVIYO_API_KEY": "pk_a"}


# -- production fails closed -------------------------------------------------------------


def test_a_complete_live_production_configuration_has_no_problem() -> None:
    assert production_problems(load_settings(PRODUCTION)) == []
    check_production(load_settings(PRODUCTION))


def test_an_empty_production_configuration_lists_everything_missing_in_one_message() -> None:
    with pytest.raises(ProductionConfigError) as refused:
        check_production(load_settings({"MAIL_PIPELINE_ENV": "production"}))
    message = str(refused.value)
    for name in (
        "MAIL_PIPELINE_DATABASE_URL is not set",
        "no printer is configured",
        "STRIPE_API_KEY is not set",
        "CLOUDFLARE_ACCOUNT_ID is not set",
        "CLOUDFLARE_IMAGES_TOKEN is not set",
        "CLOUDFLARE_ACCOUNT_HASH is not set",
        "PROOF_IMAGE_ID_KEY is not set",
        "MAIL_STATUS_QUEUE_URL is not set",
        "IMAGE_DELETION_QUEUE_URL is not set",
        "AUDIT_QUEUE_URL is not set",
        "FARADAY_API_KEY is not set",
        "REPORT_EMAIL_EVENTS_QUEUE_URL is not set",
        "SES_CONFIGURATION_SET is not set",
        "REPORT_EMAIL_SENDER is not set",
        "REPORT_RECIPIENT_TEMPLATE is not set",
        "no run-failure alert channel",
        "MAIL_PIPELINE_UPLOADS_BUCKET is not set",
    ):
        assert name in message
    assert message.count("\n  - ") == len(refused.value.problems) == 17


@pytest.mark.parametrize("printer", ["LOB", "STANNP", "INTELLIPRINT"])
def test_a_printer_key_without_its_webhook_secret_is_refused(printer: str) -> None:
    environ = {**PRODUCTION, f"{printer}_API_KEY": "key"}
    environ.pop(f"{printer}_WEBHOOK_SECRET", None)
    problems = production_problems(load_settings(environ))
    assert problems == [
        f"{printer.lower()}: {printer}_API_KEY is set but {printer}_WEBHOOK_SECRET is not: its "
        "status webhooks could not be verified"
    ]
    # ...even in a staging deployment
    assert len(production_problems(load_settings({**environ, "MAIL_PIPELINE_STAGING": "1"}))) == 1


@pytest.mark.parametrize("template", ["reports@brand.example.com", "csm+{slug}"])
def test_a_report_recipient_template_must_be_an_address_naming_the_brand(template: str) -> None:
    environ = {**PRODUCTION, "REPORT_RECIPIENT_TEMPLATE": template}
    [problem] = production_problems(load_settings(environ))
    assert problem.startswith("REPORT_RECIPIENT_TEMPLATE must be an email address with {slug}")


def test_test_credentials_and_sandbox_settings_are_refused_in_production() -> None:
    problems = production_problems(load_settings({**PRODUCTION, **TEST_SETTINGS}))
    assert problems == [
        "MAIL_PIPELINE_DATABASE_URL is an SQLite database (allowed only with "
        "MAIL_PIPELINE_STAGING=1)",
        "LOB_API_KEY is a test key (allowed only with MAIL_PIPELINE_STAGING=1)",
        "MAIL_PIPELINE_PRINTERS_TEST_MODE is on (allowed only with MAIL_PIPELINE_STAGING=1)",
        "STRIPE_API_KEY is a test key (allowed only with MAIL_PIPELINE_STAGING=1)",
    ]
    restricted = {**PRODUCTION, "STRIPE_API_KEY": "rk_test_abc"}
    assert production_problems(load_settings(restricted)) == [
        "STRIPE_API_KEY is a test key (allowed only with MAIL_PIPELINE_STAGING=1)"
    ]


def test_a_declared_staging_deployment_may_use_test_credentials() -> None:
    settings = load_settings({**PRODUCTION, **TEST_SETTINGS, "MAIL_PIPELINE_STAGING": "1"})
    assert settings.staging and settings.deployment == "staging"
    assert production_problems(settings) == []


def test_the_staging_switch_means_nothing_outside_production(tmp_path: Path) -> None:
    local = load_settings({"MAIL_PIPELINE_STAGING": "1", "MAIL_PIPELINE_DATA_DIR": str(tmp_path)})
    assert not local.staging


def test_a_bad_deployment_name_is_a_problem() -> None:
    settings = load_settings({**PRODUCTION, "MAIL_PIPELINE_DEPLOYMENT": "../other"})
    assert production_problems(settings) == [
        "MAIL_PIPELINE_DEPLOYMENT='../other' is not a deployment name (lower-case letters, "
        "digits and dashes)"
    ]


# -- secret references -------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["KLAVIYO_API_KEY_ACME", "klaviyo-api-key", "Klaviyo2"])
def test_secret_refs_are_names_inside_the_organization(ref: str) -> None:
    assert validate_secret_ref(ref) == ref


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("pk_live_abc123", "looks like a credential"),
        ("sk_test_51H", "looks like a credential"),
        ("shpat_0123", "looks like a credential"),
        ("my api key", "is not a secret name"),
        ("../STRIPE_API_KEY", "is not a secret name"),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:klaviyo/acme", "full secret"),
        ("ssm:/mail/klaviyo/acme", "full secret address"),
    ],
)
def test_credentials_and_addresses_are_refused(value: str, message: str) -> None:
    with pytest.raises(InvalidSecretRef, match=message):
        validate_secret_ref(value)


def test_where_an_organizations_secret_lives() -> None:
    assert (
        secrets_manager_id("production", 7, "KLAVIYO_API_KEY")
        == "mail-pipeline/production/organizations/7/KLAVIYO_API_KEY"
    )
    assert environment_variable(7, "klaviyo-api-key") == "MAIL_PIPELINE_ORG_7_KLAVIYO_API_KEY"


_REFS = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{1,20}", fullmatch=True).filter(
    lambda r: not r.lower().startswith(("pk_", "sk_", "rk_", "test_", "live_", "whsec_"))
)


@given(st.integers(1, 10_000), st.integers(1, 10_000), _REFS, _REFS)
def test_no_reference_of_one_organization_names_another_organizations_secret(
    a: int, b: int, ref_a: str, ref_b: str
) -> None:
    if a == b:
        return
    assert environment_variable(a, ref_a) != environment_variable(b, ref_b)
    assert secrets_manager_id("production", a, ref_a) != secrets_manager_id("production", b, ref_b)


def test_locally_organization_a_cannot_resolve_b_or_a_platform_secret() -> None:
    environ = {
        "MAIL_PIPELINE_ORG_1_KLAVIYO_API_KEY": "pk_org_one",
        "MAIL_PIPELINE_ORG_2_KLAVIYO_API_KEY": "pk_org_two",
        "STRIPE_API_KEY": "sk_live_platform",
    }
    secrets = EnvironmentSecrets(organization_secret_variables(environ))
    assert secrets.resolve(1, "KLAVIYO_API_KEY") == "pk_org_one"
    assert secrets.resolve(2, "KLAVIYO_API_KEY") == "pk_org_two"
    for ref in ("STRIPE_API_KEY", "MAIL_PIPELINE_ORG_2_KLAVIYO_API_KEY", "ORG_2_KLAVIYO_API_KEY"):
        with pytest.raises(AuthenticationFailed) as refused:
            secrets.resolve(1, ref)
        assert ref in str(refused.value) and "organization 1" in str(refused.value)
        assert "pk_org_two" not in str(refused.value)
        assert "sk_live_platform" not in str(refused.value)
    # Even handed the whole environment, the resolver only looks under the organization.
    with pytest.raises(AuthenticationFailed):
        EnvironmentSecrets(environ).resolve(1, "STRIPE_API_KEY")


# -- which process may use which database ------------------------------------------------

P, L, T = Environment.PRODUCTION, Environment.LOCAL, Environment.TEST


@pytest.mark.parametrize(
    ("process", "database", "allowed"),
    [
        (P, P, True),
        (L, L, True),
        (T, T, True),
        (L, T, True),  # local and test databases are interchangeable
        (T, L, True),
        (L, P, False),  # a laptop never drives production data
        (T, P, False),
        (P, L, False),  # production never serves made-up data
        (P, T, False),
        (P, None, False),  # unstamped: migrate first
        (L, None, False),
        (T, None, False),
    ],
)
def test_which_process_may_use_which_database(
    process: Environment, database: Environment | None, allowed: bool
) -> None:
    assert (database_refusal(process, database) is None) is allowed


def test_only_production_stamps_an_unstamped_database_that_holds_data() -> None:
    assert stamp_refusal(P, holds_data=True) is None
    assert stamp_refusal(L, holds_data=False) is None
    assert stamp_refusal(L, holds_data=True) is not None
    assert stamp_refusal(T, holds_data=True) is not None


def _without_slack() -> dict[str, str]:
    return {k: v for k, v in PRODUCTION.items() if k != "MAIL_PIPELINE_SLACK_WEBHOOK_URL"}


def test_production_needs_a_run_failure_alert_channel() -> None:
    assert production_problems(load_settings(_without_slack())) == [
        "no run-failure alert channel: set MAIL_PIPELINE_SLACK_WEBHOOK_URL, or "
        "MAIL_PIPELINE_ALERT_EMAIL_HOST, MAIL_PIPELINE_ALERT_EMAIL_SENDER and "
        "MAIL_PIPELINE_ALERT_EMAIL_RECIPIENTS"
    ]
    host_only = {**_without_slack(), "MAIL_PIPELINE_ALERT_EMAIL_HOST": "smtp.example.com"}
    assert production_problems(load_settings(host_only)) == [
        "MAIL_PIPELINE_ALERT_EMAIL_HOST is set but MAIL_PIPELINE_ALERT_EMAIL_SENDER and "
        "MAIL_PIPELINE_ALERT_EMAIL_RECIPIENTS are not both set"
    ]
    email = {
        **host_only,
        "MAIL_PIPELINE_ALERT_EMAIL_SENDER": "alerts@example.com",
        "MAIL_PIPELINE_ALERT_EMAIL_RECIPIENTS": "ops@example.com, oncall@example.com",
    }
    settings = load_settings(email)
    assert production_problems(settings) == []
    assert settings.vendors.alerts.email_recipients == ("ops@example.com", "oncall@example.com")
