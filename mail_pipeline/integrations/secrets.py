"""Resolve an organization's ``secret_ref`` to its credential, at the moment it is needed.

Where a reference points is decided here from the *organization id of the integration* and
the deployment, never from the reference alone (the naming rule is in
:mod:`mail_pipeline.domain.secrets`):

- :class:`SecretsManagerSecrets` (production): AWS Secrets Manager, secret
  ``mail-pipeline/<deployment>/organizations/<organization id>/<ref>``. The platform's IAM
  policy can grant the code location ``secretsmanager:GetSecretValue`` on
  ``mail-pipeline/<deployment>/organizations/*`` and nothing else.
- :class:`EnvironmentSecrets` (local and test): variables
  ``MAIL_PIPELINE_ORG_<organization id>_<REF>`` from the mapping ``settings`` hands over
  (``settings.organization_secret_variables``), which holds no other variable.

A missing secret, a refused reference or a denied read is an
:class:`~mail_pipeline.integrations.errors.AuthenticationFailed` naming the reference and the
organization (never the value), so the campaign concerned fails with a reason; Secrets
Manager being unreachable or throttling is :class:`VendorUnavailable` (retryable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from mail_pipeline.domain.secrets import (
    InvalidSecretRef,
    environment_variable,
    secrets_manager_id,
)
from mail_pipeline.integrations.errors import AuthenticationFailed, VendorUnavailable

VENDOR = "secrets"
#: Secrets Manager answers that mean "this organization has no such secret (for us)".
_MISSING = {
    "ResourceNotFoundException",
    "AccessDeniedException",
    "DecryptionFailure",
    "InvalidRequestException",
    "InvalidParameterException",
}


class OrganizationSecrets(Protocol):
    def resolve(self, organization_id: int, ref: str) -> str:
        """The secret ``ref`` of organization ``organization_id``."""
        ...


def _refused(organization_id: int, ref: str, why: str) -> AuthenticationFailed:
    return AuthenticationFailed(
        VENDOR, f"the secret {ref!r} of organization {organization_id} {why}"
    )


class EnvironmentSecrets:
    """Local and test: the organization's secrets from ``MAIL_PIPELINE_ORG_<id>_<REF>``."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = variables

    def resolve(self, organization_id: int, ref: str) -> str:
        try:
            name = environment_variable(organization_id, ref)
        except InvalidSecretRef as error:
            raise _refused(organization_id, ref, f"is refused: {error}") from None
        value = self._variables.get(name)
        if not value:
            raise _refused(organization_id, ref, f"is not set ({name})")
        return value


class SecretsManagerSecrets:
    """Production: the organization's secrets from AWS Secrets Manager (``SecretString``)."""

    def __init__(
        self,
        deployment: str,
        *,
        client: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.deployment = deployment
        self._client = client
        self._region_name = region_name
        self._endpoint_url = endpoint_url

    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.session.Session(region_name=self._region_name).client(
                "secretsmanager", endpoint_url=self._endpoint_url
            )
        return self._client

    def resolve(self, organization_id: int, ref: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            secret_id = secrets_manager_id(self.deployment, organization_id, ref)
        except InvalidSecretRef as error:
            raise _refused(organization_id, ref, f"is refused: {error}") from None
        try:
            answer = self.client().get_secret_value(SecretId=secret_id)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise _refused(organization_id, ref, f"is not readable ({code})") from None
            raise VendorUnavailable(
                VENDOR,
                f"Secrets Manager failed reading {ref!r} of organization "
                f"{organization_id} ({code or 'error'})",
            ) from None
        except BotoCoreError as error:
            raise VendorUnavailable(
                VENDOR, f"Secrets Manager unreachable ({type(error).__name__})"
            ) from None
        value = answer.get("SecretString")
        if not value:
            raise _refused(organization_id, ref, "has no string value")
        return str(value)
