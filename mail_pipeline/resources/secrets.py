"""Where organizations' secrets are read, for every resource that holds an organization's
credential (the CDP, the order sources): AWS Secrets Manager in production, the
``MAIL_PIPELINE_ORG_<id>_<REF>`` variables locally (see ``integrations.secrets``)."""

from __future__ import annotations

from typing import Literal

from mail_pipeline.integrations.secrets import (
    EnvironmentSecrets,
    OrganizationSecrets,
    SecretsManagerSecrets,
)
from mail_pipeline.settings import organization_secret_variables

#: ``secrets-manager`` (production binds it) or ``environment`` (local and test only).
SecretsSource = Literal["secrets-manager", "environment"]


def organization_secrets(
    source: SecretsSource, deployment: str, region_name: str | None = None
) -> OrganizationSecrets:
    """The resolver of organizations' secrets for ``source``."""
    if source == "environment":
        return EnvironmentSecrets(organization_secret_variables())
    return SecretsManagerSecrets(deployment, region_name=region_name)
