"""Integration settings refer to secrets; they never hold them, and they only reach their own.

A ``secret_ref`` (``organization_integrations.secret_ref``) is the *name* of a secret inside
its organization's own namespace, such as ``KLAVIYO_API_KEY`` or ``klaviyo-api-key``. Where it
lives is decided by the deployment, never by the reference, and always includes the
organization id of the integration it belongs to:

=============  ===============================================================
production     AWS Secrets Manager secret
               ``mail-pipeline/<deployment>/organizations/<organization id>/<ref>``
local, test    environment variable ``MAIL_PIPELINE_ORG_<organization id>_<REF>``
               (upper-cased, ``-`` as ``_``)
=============  ===============================================================

So organization A's reference cannot name organization B's secret, and no reference can name
a platform secret (``STRIPE_API_KEY``, a printer key): neither lives under an organization's
prefix. Full ARNs and ``ssm:`` paths are refused, because they could point anywhere.
Anything that looks like a credential itself (a Klaviyo ``pk_`` key, a Stripe ``sk_`` key, a
Shopify ``shpat_`` token, or free text) is refused too, so a key pasted into the wrong field
never lands in the database.
"""

from __future__ import annotations

import re

#: Every organization's secrets in Secrets Manager live under this prefix.
SECRETS_MANAGER_PREFIX = "mail-pipeline"
#: Every organization's secrets in the environment (local and test) start with this.
ORGANIZATION_VARIABLE_PREFIX = "MAIL_PIPELINE_ORG_"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{1,127}$")
_DEPLOYMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_CREDENTIAL_PREFIXES = ("pk_", "sk_", "rk_", "shpat_", "shpss_", "whsec_", "test_", "live_")


class InvalidSecretRef(ValueError):
    pass


def validate_secret_ref(value: str) -> str:
    text = (value or "").strip()
    if text.lower().startswith(_CREDENTIAL_PREFIXES):
        raise InvalidSecretRef(
            "secret_ref looks like a credential; store the name of the organization's secret "
            "that holds it instead"
        )
    if text.lower().startswith(("arn:", "ssm:")):
        raise InvalidSecretRef(
            f"secret_ref {text!r} is a full secret address; store the secret's name inside the "
            "organization's namespace (for example KLAVIYO_API_KEY) instead"
        )
    if _NAME.match(text):
        return text
    raise InvalidSecretRef(
        f"secret_ref {text!r} is not a secret name (a letter, then letters, digits, '_' or '-')"
    )


def secrets_manager_id(deployment: str, organization_id: int, ref: str) -> str:
    """The Secrets Manager name of organization ``organization_id``'s secret ``ref``."""
    ref = validate_secret_ref(ref)
    if not _DEPLOYMENT.match(deployment):
        raise InvalidSecretRef(f"deployment {deployment!r} is not a deployment name")
    return (
        f"{SECRETS_MANAGER_PREFIX}/{deployment}/organizations/{_organization(organization_id)}"
        f"/{ref}"
    )


def environment_variable(organization_id: int, ref: str) -> str:
    """The variable that holds organization ``organization_id``'s secret ``ref`` locally."""
    ref = validate_secret_ref(ref)
    name = ref.upper().replace("-", "_")
    return f"{ORGANIZATION_VARIABLE_PREFIX}{_organization(organization_id)}_{name}"


def _organization(organization_id: int) -> int:
    if isinstance(organization_id, bool) or not isinstance(organization_id, int):
        raise InvalidSecretRef(f"organization id {organization_id!r} is not an integer")
    if organization_id <= 0:
        raise InvalidSecretRef(f"organization id {organization_id} is not positive")
    return organization_id
