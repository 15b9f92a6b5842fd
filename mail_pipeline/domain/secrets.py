"""Integration settings refer to secrets; they never hold them.

A ``secret_ref`` is the *name* of where a credential lives: an environment variable
(``KLAVIYO_API_KEY_ACME``), an AWS Secrets Manager ARN, or an SSM parameter path. Anything
that looks like a credential itself (a Klaviyo ``pk_`` key, a Stripe ``sk_`` key, a Shopify
``shpat_`` token, or free text) is refused, so a key pasted into the wrong field never lands in
the database.
"""

from __future__ import annotations

import re

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{1,127}$")
_ARN = re.compile(r"^arn:aws:(secretsmanager|ssm):[a-z0-9-]+:\d{12}:[A-Za-z0-9/_+=.@:-]+$")
_SSM_PATH = re.compile(r"^ssm:/[A-Za-z0-9/_.-]+$")
_CREDENTIAL_PREFIXES = ("pk_", "sk_", "rk_", "shpat_", "shpss_", "whsec_", "test_", "live_")


class InvalidSecretRef(ValueError):
    pass


def validate_secret_ref(value: str) -> str:
    text = (value or "").strip()
    if text.lower().startswith(_CREDENTIAL_PREFIXES):
        raise InvalidSecretRef(
            "secret_ref looks like a credential; store the name of the environment variable "
            "or secrets-manager entry that holds it instead"
        )
    if _ENV_NAME.match(text) or _ARN.match(text) or _SSM_PATH.match(text):
        return text
    raise InvalidSecretRef(
        f"secret_ref {text!r} is not an environment variable name (UPPER_SNAKE_CASE), "
        "a secrets-manager ARN or an ssm:/path"
    )
