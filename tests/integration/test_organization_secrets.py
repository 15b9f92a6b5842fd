"""Organizations' secrets in production: AWS Secrets Manager (on moto), one path per
organization; a reference can only ever reach its own organization's secrets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.integrations.errors import AuthenticationFailed
from mail_pipeline.integrations.secrets import SecretsManagerSecrets
from mail_pipeline.resources import cdp as cdp_module
from mail_pipeline.resources.cdp import KlaviyoCdp

REGION = "us-east-1"


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        client.create_secret(
            Name="mail-pipeline/production/organizations/1/KLAVIYO_API_KEY",
            SecretString="pk_org_one",
        )
        client.create_secret(
            Name="mail-pipeline/production/organizations/2/KLAVIYO_API_KEY",
            SecretString="pk_org_two",
        )
        client.create_secret(
            Name="mail-pipeline/staging/organizations/1/KLAVIYO_API_KEY",
            SecretString="pk_org_one_staging",
        )
        client.create_secret(Name="STRIPE_API_KEY", SecretString="sk_live_platform")
        yield client


def _integration(organization_id: int, ref: str) -> IntegrationRef:
    return IntegrationRef(organization_id, IntegrationKind.KLAVIYO, ref, {})


class _Client:
    """Stands in for the Klaviyo client: remembers the key it was given."""

    def __init__(self, api_key: str, **_: Any) -> None:
        self.api_key = api_key


@pytest.fixture
def klaviyo_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cdp_module, "KlaviyoClient", _Client)


def test_each_organization_reads_its_own_secret(secretsmanager: Any) -> None:
    secrets = SecretsManagerSecrets("production", client=secretsmanager)
    assert secrets.resolve(1, "KLAVIYO_API_KEY") == "pk_org_one"
    assert secrets.resolve(2, "KLAVIYO_API_KEY") == "pk_org_two"
    assert SecretsManagerSecrets("staging", client=secretsmanager).resolve(
        1, "KLAVIYO_API_KEY"
    ) == ("pk_org_one_staging")


@pytest.mark.parametrize(
    "ref",
    [
        "STRIPE_API_KEY",  # the platform's secret, at the top level
        "organizations/2/KLAVIYO_API_KEY",  # a path into organization 2
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:mail-pipeline/production/"
        "organizations/2/KLAVIYO_API_KEY",
        "KLAVIYO_API_KEY_OF_2",
    ],
)
def test_organization_a_cannot_resolve_b_or_the_platforms_secret(
    secretsmanager: Any, ref: str
) -> None:
    secrets = SecretsManagerSecrets("production", client=secretsmanager)
    with pytest.raises(AuthenticationFailed) as refused:
        secrets.resolve(1, ref)
    message = str(refused.value)
    assert "organization 1" in message and ref in message
    assert "pk_org_two" not in message and "sk_live_platform" not in message


@pytest.mark.usefixtures("klaviyo_keys")
def test_production_cdp_uses_the_integrations_own_organization(secretsmanager: Any) -> None:
    cdp = KlaviyoCdp(secrets="secrets-manager", deployment="production", region_name=REGION)
    client: Any = cdp.client_for(_integration(2, "KLAVIYO_API_KEY"))
    assert client.api_key == "pk_org_two"
    with pytest.raises(AuthenticationFailed, match="'KLAVIYO_API_KEY' of organization 3"):
        cdp.client_for(_integration(3, "KLAVIYO_API_KEY"))


@pytest.mark.usefixtures("klaviyo_keys")
def test_a_local_cdp_reads_only_organization_scoped_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAIL_PIPELINE_ORG_5_KLAVIYO_API_KEY", "pk_org_five")
    monkeypatch.setenv("KLAVIYO_API_KEY_ACME", "pk_unscoped")
    cdp = KlaviyoCdp(secrets="environment")
    client: Any = cdp.client_for(_integration(5, "KLAVIYO_API_KEY"))
    assert client.api_key == "pk_org_five"
    with pytest.raises(AuthenticationFailed, match="'KLAVIYO_API_KEY_ACME' of organization 5"):
        cdp.client_for(_integration(5, "KLAVIYO_API_KEY_ACME"))
