"""The one place that reads the process's environment variables.

``MAIL_PIPELINE_ENV`` picks ``local`` (the default), ``test`` or ``production``; nothing else
in the code asks. :func:`load_settings` reads every variable the code location uses, once, into
frozen dataclasses - reading them is not I/O, and nothing here touches a file or a network.
No other module reads ``os.environ``.

=============  ===========================================  =================================
environment    app database                                 vendors and queues
=============  ===========================================  =================================
local          ``MAIL_PIPELINE_DATABASE_URL`` or a SQLite   sandboxes, local SQS-like queues
               file in ``MAIL_PIPELINE_DATA_DIR``
               (default ``./data``)
test           ``MAIL_PIPELINE_TEST_DATABASE_URL`` or a     sandboxes, local queues, in the
               SQLite file in the data dir                  test's data dir
production     ``MAIL_PIPELINE_DATABASE_URL`` (PostgreSQL)  real APIs, SQS; platform secrets
                                                            from env, organizations' secrets
                                                            from AWS Secrets Manager
=============  ===========================================  =================================

With ``MAIL_PIPELINE_SANDBOX_URL`` set, local and test bind the sandboxes as they are served
by a separate sandbox server process (``docs/sandboxes.md``) instead of in-process ones.

``MAIL_PIPELINE_RATE_LIMITS`` overrides vendors' published rate limits with contract ones
(``lob=300/5,stannp=off``), in every environment (:func:`parse_rate_limits`,
``docs/rate_limits.md``).

Secrets are not kept here. A platform secret (a printer key, the Stripe key) is an
:class:`EnvVarRef`: the variable's name, whether it is set and whether it is a test
credential - enough for :func:`production_problems` to judge a production configuration at
load time, while the value reaches its resource as ``dg.EnvVar`` when a run launches.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import NamedTuple

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mail_pipeline.domain.environments import Environment
from mail_pipeline.domain.secrets import ORGANIZATION_VARIABLE_PREFIX

ENV_VAR = "MAIL_PIPELINE_ENV"
DATABASE_URL_VAR = "MAIL_PIPELINE_DATABASE_URL"
TEST_DATABASE_URL_VAR = "MAIL_PIPELINE_TEST_DATABASE_URL"
#: Production only: this deployment is a staging one, allowed test credentials and sandbox
#: settings; every job says so in the UI.
STAGING_VAR = "MAIL_PIPELINE_STAGING"
#: The deployment's name in the organizations' Secrets Manager paths (default ``production``,
#: or ``staging`` when ``MAIL_PIPELINE_STAGING=1``).
DEPLOYMENT_VAR = "MAIL_PIPELINE_DEPLOYMENT"
PRINTERS_TEST_MODE_VAR = "MAIL_PIPELINE_PRINTERS_TEST_MODE"
#: Local and test only: the URL of a running sandbox server (``mail-pipeline sandbox-server``);
#: unset, the sandbox vendors run inside each process.
SANDBOX_URL_VAR = "MAIL_PIPELINE_SANDBOX_URL"
#: Contract rate limits that replace the published ones: ``vendor=CALLS/SECONDS`` or
#: ``vendor=off``, comma-separated (:func:`parse_rate_limits`).
RATE_LIMITS_VAR = "MAIL_PIPELINE_RATE_LIMITS"
#: The vendors whose client-side rate limit ``MAIL_PIPELINE_RATE_LIMITS`` may set.
RATE_LIMITED_VENDORS = ("lob", "stannp", "intelliprint", "cloudflare", "klaviyo", "stripe")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Credentials that only reach a vendor's test mode: nothing is printed, nothing is charged.
#: Stannp and IntelliPrint have no test keys (their test mode is ``PRINTERS_TEST_MODE``).
TEST_CREDENTIAL_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "LOB_API_KEY": ("test_",),
    "STRIPE_API_KEY": ("sk_test_", "rk_test_"),
}
PRINTERS = ("lob", "stannp", "intelliprint")
_DEPLOYMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

__all__ = [
    "EnvVarRef",
    "Environment",
    "PrinterSettings",
    "ProductionConfigError",
    "RateLimit",
    "Settings",
    "SettingsError",
    "VendorSettings",
    "check_production",
    "load_settings",
    "organization_secret_variables",
    "parse_rate_limits",
    "production_problems",
    "rate_limit_overrides",
]


class SettingsError(RuntimeError):
    pass


class ProductionConfigError(SettingsError):
    """The production configuration is unsafe or incomplete; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"refusing to load the production definitions ({ENV_VAR}=production), "
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''}:\n{listed}"
        )


class RateLimit(NamedTuple):
    """A vendor's limit: at most ``calls`` requests in any ``seconds``. A tuple, as the
    clients take their ``rate_limit``."""

    calls: int
    seconds: float


@dataclass(frozen=True)
class EnvVarRef:
    """An environment variable that is bound as ``dg.EnvVar`` (resolved when a run launches),
    with what load-time validation may know about it. The value itself is not kept."""

    name: str
    is_set: bool = False
    #: The value is a vendor's test credential (see ``TEST_CREDENTIAL_PREFIXES``).
    is_test_credential: bool = False

    @classmethod
    def read(cls, environ: Mapping[str, str], name: str) -> EnvVarRef:
        value = (environ.get(name) or "").strip()
        prefixes = TEST_CREDENTIAL_PREFIXES.get(name, ())
        return cls(name, bool(value), bool(value) and value.startswith(prefixes))


@dataclass(frozen=True)
class PrinterSettings:
    """A printer's API key and the secret its status webhooks are signed with."""

    name: str
    api_key: EnvVarRef
    webhook_secret: EnvVarRef

    @classmethod
    def read(cls, environ: Mapping[str, str], name: str) -> PrinterSettings:
        upper = name.upper()
        return cls(
            name,
            EnvVarRef.read(environ, f"{upper}_API_KEY"),
            EnvVarRef.read(environ, f"{upper}_WEBHOOK_SECRET"),
        )

    @property
    def configured(self) -> bool:
        return self.api_key.is_set


ALERT_EMAIL = "MAIL_PIPELINE_ALERT_EMAIL_"


@dataclass(frozen=True)
class AlertSettings:
    """Where run-failure alerts go in production (``docs/alerts.md``): a Slack incoming
    webhook, or email over SMTP. Secrets are bound as ``dg.EnvVar``; the rest is read here."""

    slack_webhook_url: EnvVarRef = EnvVarRef("MAIL_PIPELINE_SLACK_WEBHOOK_URL")
    email_host: str | None = None
    email_port: int = 587
    email_username: str | None = None
    email_password: EnvVarRef = EnvVarRef(f"{ALERT_EMAIL}PASSWORD")
    email_sender: str | None = None
    email_recipients: tuple[str, ...] = ()
    email_starttls: bool = True
    #: The Dagster UI's address, for links to failed runs.
    ui_base_url: str | None = None

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> AlertSettings:
        recipients = environ.get(f"{ALERT_EMAIL}RECIPIENTS") or ""
        port = (environ.get(f"{ALERT_EMAIL}PORT") or "587").strip()
        return cls(
            slack_webhook_url=EnvVarRef.read(environ, "MAIL_PIPELINE_SLACK_WEBHOOK_URL"),
            email_host=environ.get(f"{ALERT_EMAIL}HOST") or None,
            email_port=int(port) if port.isdigit() else 0,
            email_username=environ.get(f"{ALERT_EMAIL}USERNAME") or None,
            email_password=EnvVarRef.read(environ, f"{ALERT_EMAIL}PASSWORD"),
            email_sender=environ.get(f"{ALERT_EMAIL}SENDER") or None,
            email_recipients=tuple(r.strip() for r in recipients.split(",") if r.strip()),
            email_starttls=(environ.get(f"{ALERT_EMAIL}STARTTLS") or "1").strip() != "0",
            ui_base_url=environ.get("MAIL_PIPELINE_UI_BASE_URL") or None,
        )

    @property
    def email_configured(self) -> bool:
        return bool(self.email_host and self.email_sender and self.email_recipients)

    def problems(self) -> list[str]:
        """Production needs one working channel."""
        if self.slack_webhook_url.is_set:
            return []
        if self.email_host and not self.email_configured:
            return [
                f"{ALERT_EMAIL}HOST is set but {ALERT_EMAIL}SENDER and "
                f"{ALERT_EMAIL}RECIPIENTS are not both set"
            ]
        if self.email_configured and not 0 < self.email_port < 65536:
            return [f"{ALERT_EMAIL}PORT is not a port number"]
        if self.email_configured:
            return []
        return [
            "no run-failure alert channel: set MAIL_PIPELINE_SLACK_WEBHOOK_URL, or "
            f"{ALERT_EMAIL}HOST, {ALERT_EMAIL}SENDER and {ALERT_EMAIL}RECIPIENTS"
        ]


def _printers(environ: Mapping[str, str]) -> tuple[PrinterSettings, ...]:
    return tuple(PrinterSettings.read(environ, name) for name in PRINTERS)


@dataclass(frozen=True)
class VendorSettings:
    """The real vendors and queues, bound in production (local and test bind sandboxes)."""

    printers: tuple[PrinterSettings, ...] = field(default_factory=lambda: _printers({}))
    #: Pieces are created in the printers' test modes (validated, never printed or charged).
    printers_test_mode: bool = False
    stripe_api_key: EnvVarRef = EnvVarRef("STRIPE_API_KEY")
    cloudflare_account_id: EnvVarRef = EnvVarRef("CLOUDFLARE_ACCOUNT_ID")
    cloudflare_images_token: EnvVarRef = EnvVarRef("CLOUDFLARE_IMAGES_TOKEN")
    cloudflare_account_hash: EnvVarRef = EnvVarRef("CLOUDFLARE_ACCOUNT_HASH")
    #: The key proof image ids are derived with (their URLs cannot be guessed without it).
    proof_image_id_key: EnvVarRef = EnvVarRef("PROOF_IMAGE_ID_KEY")
    render_gateway_url: str | None = None
    render_gateway_token: EnvVarRef = EnvVarRef("RENDER_GATEWAY_TOKEN")
    pixelixe_api_key: EnvVarRef = EnvVarRef("PIXELIXE_API_KEY")
    render_fallback_order: tuple[str, ...] = ("gateway", "backup")
    status_queue_url: EnvVarRef = EnvVarRef("MAIL_STATUS_QUEUE_URL")
    image_deletion_queue_url: EnvVarRef = EnvVarRef("IMAGE_DELETION_QUEUE_URL")
    audit_queue_url: EnvVarRef = EnvVarRef("AUDIT_QUEUE_URL")
    #: Address enrichment (Faraday's batch API).
    faraday_api_key: EnvVarRef = EnvVarRef("FARADAY_API_KEY")
    #: Report emails (docs/email_delivery.md): the queue of SES events, the configuration set
    #: that publishes them, the From address, and who gets a brand's reports (``{slug}``).
    report_email_events_queue_url: EnvVarRef = EnvVarRef("REPORT_EMAIL_EVENTS_QUEUE_URL")
    ses_configuration_set: str | None = None
    report_sender: str | None = None
    report_recipient_template: str | None = None
    aws_region: str = "us-east-1"
    alerts: AlertSettings = field(default_factory=AlertSettings)
    #: Where brands' CSV lists arrive: s3://<uploads_bucket>/<uploads_prefix>/...
    uploads_bucket: str | None = None
    uploads_prefix: str = "uploads"

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> VendorSettings:
        fallback = environ.get("RENDER_FALLBACK_ORDER") or "gateway,backup"
        return cls(
            printers=_printers(environ),
            printers_test_mode=_flag(environ, PRINTERS_TEST_MODE_VAR),
            stripe_api_key=EnvVarRef.read(environ, "STRIPE_API_KEY"),
            cloudflare_account_id=EnvVarRef.read(environ, "CLOUDFLARE_ACCOUNT_ID"),
            cloudflare_images_token=EnvVarRef.read(environ, "CLOUDFLARE_IMAGES_TOKEN"),
            cloudflare_account_hash=EnvVarRef.read(environ, "CLOUDFLARE_ACCOUNT_HASH"),
            proof_image_id_key=EnvVarRef.read(environ, "PROOF_IMAGE_ID_KEY"),
            render_gateway_url=environ.get("RENDER_GATEWAY_URL") or None,
            render_gateway_token=EnvVarRef.read(environ, "RENDER_GATEWAY_TOKEN"),
            pixelixe_api_key=EnvVarRef.read(environ, "PIXELIXE_API_KEY"),
            render_fallback_order=tuple(n.strip() for n in fallback.split(",") if n.strip()),
            status_queue_url=EnvVarRef.read(environ, "MAIL_STATUS_QUEUE_URL"),
            faraday_api_key=EnvVarRef.read(environ, "FARADAY_API_KEY"),
            report_email_events_queue_url=EnvVarRef.read(environ, "REPORT_EMAIL_EVENTS_QUEUE_URL"),
            ses_configuration_set=environ.get("SES_CONFIGURATION_SET") or None,
            report_sender=environ.get("REPORT_EMAIL_SENDER") or None,
            report_recipient_template=environ.get("REPORT_RECIPIENT_TEMPLATE") or None,
            image_deletion_queue_url=EnvVarRef.read(environ, "IMAGE_DELETION_QUEUE_URL"),
            audit_queue_url=EnvVarRef.read(environ, "AUDIT_QUEUE_URL"),
            aws_region=environ.get("AWS_REGION") or "us-east-1",
            alerts=AlertSettings.read(environ),
            uploads_bucket=environ.get("MAIL_PIPELINE_UPLOADS_BUCKET") or None,
            uploads_prefix=environ.get("MAIL_PIPELINE_UPLOADS_PREFIX") or "uploads",
        )

    def printer(self, name: str) -> PrinterSettings:
        return next(p for p in self.printers if p.name == name)


@dataclass(frozen=True)
class Settings:
    environment: Environment
    #: The app database URL (in production too: the CLI and migrations use it; the Dagster
    #: resource is bound to ``dg.EnvVar(DATABASE_URL_VAR)``). Empty when production has none.
    database_url: str = field(repr=False)
    data_dir: Path
    #: Where a static file server publishes ``image_dir`` (local only; None: file:// URLs).
    image_base_url: str | None = None
    #: Production only: a staging deployment (test credentials allowed, shown in the UI).
    staging: bool = False
    #: The deployment's name in the organizations' secret paths (see ``domain.secrets``).
    deployment: str = "local"
    #: The sandbox server (``integrations.sandbox.server``) the vendors are served by, over
    #: the network (``MAIL_PIPELINE_SANDBOX_URL``). Local and test: the sandbox resources
    #: talk to it; None: the sandboxes run inside each process. Production, staging only
    #: (the production-like mode, ``docs/operations.md``): the live printers and Stripe are
    #: pointed at it, the other vendors are its sandboxes.
    sandbox_url: str | None = None
    vendors: VendorSettings = field(default_factory=VendorSettings)
    #: ``MAIL_PIPELINE_RATE_LIMITS``: a vendor's contract limit, or None for no client-side
    #: limit; a vendor not listed keeps its published limit.
    rate_limits: Mapping[str, RateLimit | None] = field(default_factory=dict)

    @property
    def sandbox_path(self) -> Path:
        """The sandbox vendors' shared state (profiles, postcards, meter events)."""
        return self.data_dir / "sandbox.sqlite"

    @property
    def queue_path(self) -> Path:
        """The local queues with SQS semantics."""
        return self.data_dir / "queues.sqlite"

    @property
    def image_dir(self) -> Path:
        """Where the sandbox image host keeps uploaded proofs."""
        return self.data_dir / "images"


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return (environ.get(name) or "").strip().lower() in ("1", "true", "yes")


def current_environment(environ: Mapping[str, str] | None = None) -> Environment:
    """The kind of environment this process serves (``MAIL_PIPELINE_ENV``, default local)."""
    value = _environ(environ).get(ENV_VAR, Environment.LOCAL.value).strip().lower()
    try:
        return Environment(value)
    except ValueError:
        allowed = ", ".join(e.value for e in Environment)
        raise SettingsError(f"{ENV_VAR}={value!r} is not one of: {allowed}") from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    environ = _environ(environ)
    env = current_environment(environ)
    data_dir = Path(environ.get("MAIL_PIPELINE_DATA_DIR") or PROJECT_ROOT / "data").resolve()
    staging = env is Environment.PRODUCTION and _flag(environ, STAGING_VAR)
    if env is Environment.PRODUCTION:
        url = environ.get(DATABASE_URL_VAR) or ""
        deployment = environ.get(DEPLOYMENT_VAR) or ("staging" if staging else "production")
    elif env is Environment.TEST:
        url = environ.get(TEST_DATABASE_URL_VAR) or f"sqlite:///{data_dir}/test.sqlite"
        deployment = env.value
    else:
        url = environ.get(DATABASE_URL_VAR) or f"sqlite:///{data_dir}/mail_pipeline.sqlite"
        deployment = env.value
    return Settings(
        environment=env,
        database_url=url,
        data_dir=data_dir,
        image_base_url=environ.get("MAIL_PIPELINE_IMAGE_BASE_URL") or None,
        sandbox_url=(environ.get(SANDBOX_URL_VAR) or "").strip().rstrip("/") or None,
        staging=staging,
        deployment=deployment,
        vendors=VendorSettings.read(environ),
        rate_limits=rate_limit_overrides(environ),
    )


def organization_secret_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that may hold organizations' secrets outside production: only those
    named ``MAIL_PIPELINE_ORG_<organization id>_<REF>``, so a platform secret such as
    ``STRIPE_API_KEY`` is never handed to the resolver (see ``integrations.secrets``)."""
    return {
        name: value
        for name, value in _environ(environ).items()
        if name.startswith(ORGANIZATION_VARIABLE_PREFIX)
    }


def _is_sqlite(url: str) -> bool:
    try:
        return make_url(url).get_backend_name() == "sqlite"
    except ArgumentError:
        return False


def production_problems(settings: Settings) -> list[str]:
    """Everything that makes ``settings`` unfit to serve production, each as one sentence.

    - Missing: the database URL, at least one printer with an API key *and* a webhook secret,
      the Stripe key, Cloudflare Images and the proof image id key, the three queue URLs.
    - Unsafe always: a printer with an API key but no webhook secret (its status webhooks
      could not be verified, so a forged "delivered" would be believed).
    - Test credentials and sandbox settings (an SQLite database, a Lob ``test_`` key, a
      Stripe ``sk_test_``/``rk_test_`` key, the printers' test mode): refused unless the
      deployment is declared staging (``MAIL_PIPELINE_STAGING=1``), which every job then
      shows in the UI.
    """
    problems: list[str] = []
    vendors = settings.vendors
    staging_hint = f" (allowed only with {STAGING_VAR}=1)"

    if not settings.database_url:
        problems.append(f"{DATABASE_URL_VAR} is not set")
    elif _is_sqlite(settings.database_url) and not settings.staging:
        problems.append(f"{DATABASE_URL_VAR} is an SQLite database{staging_hint}")

    for printer in vendors.printers:
        if printer.api_key.is_set and not printer.webhook_secret.is_set:
            problems.append(
                f"{printer.name}: {printer.api_key.name} is set but "
                f"{printer.webhook_secret.name} is not: its status webhooks could not be "
                "verified"
            )
        if printer.api_key.is_test_credential and not settings.staging:
            problems.append(f"{printer.api_key.name} is a test key{staging_hint}")
    if not any(p.api_key.is_set and p.webhook_secret.is_set for p in vendors.printers):
        names = ", ".join(f"{p.api_key.name} + {p.webhook_secret.name}" for p in vendors.printers)
        problems.append(f"no printer is configured: set at least one of {names}")
    if vendors.printers_test_mode and not settings.staging:
        problems.append(f"{PRINTERS_TEST_MODE_VAR} is on{staging_hint}")
    if settings.sandbox_url and not settings.staging:
        problems.append(
            f"{SANDBOX_URL_VAR} is set: the vendors would be a sandbox server{staging_hint}"
        )

    if not vendors.stripe_api_key.is_set:
        problems.append(f"{vendors.stripe_api_key.name} is not set")
    elif vendors.stripe_api_key.is_test_credential and not settings.staging:
        problems.append(f"{vendors.stripe_api_key.name} is a test key{staging_hint}")

    required = (
        vendors.cloudflare_account_id,
        vendors.cloudflare_images_token,
        vendors.cloudflare_account_hash,
        vendors.proof_image_id_key,
        vendors.status_queue_url,
        vendors.image_deletion_queue_url,
        vendors.audit_queue_url,
        vendors.faraday_api_key,
        vendors.report_email_events_queue_url,
    )
    problems.extend(f"{ref.name} is not set" for ref in required if not ref.is_set)
    report_email = {
        "SES_CONFIGURATION_SET": vendors.ses_configuration_set,
        "REPORT_EMAIL_SENDER": vendors.report_sender,
        "REPORT_RECIPIENT_TEMPLATE": vendors.report_recipient_template,
    }
    problems.extend(
        f"{name} is not set (report emails)" for name, v in report_email.items() if not v
    )
    template = vendors.report_recipient_template
    if template and ("{slug}" not in template or "@" not in template):
        problems.append(
            "REPORT_RECIPIENT_TEMPLATE must be an email address with {slug} in it "
            "(e.g. csm+{slug}@example.com)"
        )
    if not (settings.staging and settings.sandbox_url):
        # A staging deployment on a sandbox server keeps its alerts in the data dir's outbox.
        problems.extend(vendors.alerts.problems())
    if not vendors.uploads_bucket:
        problems.append("MAIL_PIPELINE_UPLOADS_BUCKET is not set (where CSV lists arrive)")

    if not _DEPLOYMENT_NAME.match(settings.deployment):
        problems.append(
            f"{DEPLOYMENT_VAR}={settings.deployment!r} is not a deployment name "
            "(lower-case letters, digits and dashes)"
        )
    return problems


def check_production(settings: Settings) -> None:
    """Raise :class:`ProductionConfigError` listing every problem, or return quietly."""
    problems = production_problems(settings)
    if problems:
        raise ProductionConfigError(problems)


#: Where the deployment sets the first day of every BFCM season, as ``MM-DD``.
BFCM_SEASON_START_VAR = "MAIL_PIPELINE_BFCM_SEASON_START"


def bfcm_season_start(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The BFCM season's first day (month, day) from ``MAIL_PIPELINE_BFCM_SEASON_START``
    (``MM-DD``; default November 1): a day of October or November, so the season (through
    December 10) is never empty or longer than ten weeks. Anything else is refused with the
    reason, when the definitions load (``partitions.bfcm_report_partitions``)."""
    text = (_environ(environ).get(BFCM_SEASON_START_VAR) or "").strip()
    if not text:
        return (11, 1)
    try:
        month, day = (int(part) for part in text.split("-"))
        date(2024, month, day)  # a leap year: any real MM-DD
    except ValueError:
        raise SettingsError(f"{BFCM_SEASON_START_VAR}={text!r} is not a date as MM-DD") from None
    if month not in (10, 11):
        raise SettingsError(
            f"{BFCM_SEASON_START_VAR}={text!r}: the BFCM season starts in October or November"
        )
    return (month, day)


def parse_rate_limits(text: str) -> dict[str, RateLimit | None]:
    """``{"lob": RateLimit(300, 5.0), "stannp": None}`` for ``"lob=300/5, stannp=off"``.

    Each entry is ``vendor=CALLS/SECONDS`` (a whole number of calls, at least 1, per a
    positive number of seconds) or ``vendor=off`` (no client-side limit: the benchmark's
    capacity mode), for a vendor of :data:`RATE_LIMITED_VENDORS`, each vendor at most once.
    Anything else is refused with :class:`SettingsError` naming the entry and what is wrong.
    """
    limits: dict[str, RateLimit | None] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        vendor, sep, value = (piece.strip() for piece in entry.partition("="))
        vendor = vendor.lower()
        if not sep or not vendor or not value:
            raise SettingsError(
                f"{RATE_LIMITS_VAR}: {entry!r} is not vendor=CALLS/SECONDS or vendor=off "
                "(e.g. lob=150/5,stannp=off)"
            )
        if vendor not in RATE_LIMITED_VENDORS:
            raise SettingsError(
                f"{RATE_LIMITS_VAR}: {vendor!r} is not a rate-limited vendor "
                f"(one of: {', '.join(RATE_LIMITED_VENDORS)})"
            )
        if vendor in limits:
            raise SettingsError(f"{RATE_LIMITS_VAR}: {vendor} is given twice")
        limits[vendor] = _rate_limit(vendor, value)
    return limits


def _rate_limit(vendor: str, value: str) -> RateLimit | None:
    if value.lower() == "off":
        return None
    calls_text, sep, seconds_text = (piece.strip() for piece in value.partition("/"))
    if not sep:
        raise SettingsError(
            f"{RATE_LIMITS_VAR}: {vendor}={value!r} is not CALLS/SECONDS or off (e.g. 150/5)"
        )
    if not (calls_text.isascii() and calls_text.isdigit()) or int(calls_text) < 1:
        raise SettingsError(
            f"{RATE_LIMITS_VAR}: {vendor}={value!r}: the calls ({calls_text!r}) must be a "
            "whole number of at least 1"
        )
    try:
        seconds = float(seconds_text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise SettingsError(
            f"{RATE_LIMITS_VAR}: {vendor}={value!r}: the seconds ({seconds_text!r}) must be a "
            "positive number"
        )
    return RateLimit(int(calls_text), seconds)


def rate_limit_overrides(environ: Mapping[str, str] | None = None) -> dict[str, RateLimit | None]:
    """The process's ``MAIL_PIPELINE_RATE_LIMITS`` (:func:`parse_rate_limits`); unset or
    empty: none, every vendor keeps its published limit."""
    return parse_rate_limits(_environ(environ).get(RATE_LIMITS_VAR) or "")
