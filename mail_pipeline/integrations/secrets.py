"""Resolve an integration's ``secret_ref`` to the credential, at the moment it is needed.

``secret_ref`` names where a credential lives (see :mod:`mail_pipeline.domain.secrets`):

- ``KLAVIYO_API_KEY_ACME``: an environment variable of the run's process;
- ``arn:aws:secretsmanager:...``: an AWS Secrets Manager secret (its ``SecretString``);
- ``ssm:/path``: an SSM parameter, decrypted.

A missing secret is an :class:`~mail_pipeline.integrations.errors.AuthenticationFailed`
naming the reference (never the value), so the campaign concerned fails with a reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mail_pipeline.domain.secrets import validate_secret_ref
from mail_pipeline.integrations.errors import AuthenticationFailed


def resolve_secret(
    ref: str, *, environ: Mapping[str, str] | None = None, aws_client: Any = None
) -> str:
    ref = validate_secret_ref(ref)
    if ref.startswith("arn:aws:secretsmanager:"):
        client = aws_client or _boto3_client("secretsmanager", ref)
        value = client.get_secret_value(SecretId=ref).get("SecretString")
    elif ref.startswith("arn:aws:ssm:") or ref.startswith("ssm:"):
        client = aws_client or _boto3_client("ssm", ref)
        name = ref.removeprefix("ssm:") if ref.startswith("ssm:") else ref
        value = client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    else:
        value = (os.environ if environ is None else environ).get(ref)
    if not value:
        raise AuthenticationFailed("secrets", f"the secret {ref} is not set")
    return str(value)


def _boto3_client(service: str, ref: str) -> Any:
    import boto3

    region = ref.split(":")[3] if ref.startswith("arn:") else None
    session: Any = boto3.session.Session(region_name=region)
    return session.client(service)
