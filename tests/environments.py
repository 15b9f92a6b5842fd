"""Environment variables of a production deployment, for tests of what production accepts."""

from __future__ import annotations

#: A complete, live production environment.
PRODUCTION = {
    "MAIL_PIPELINE_ENV": "production",
    "MAIL_PIPELINE_DATABASE_URL": "postgresql://app:pw@db.internal:5432/mail",
    "LOB_API_KEY": "live_abc",
    "LOB_WEBHOOK_SECRET": "lob-secret",
    "STANNP_API_KEY": "stannp-key",
    "STANNP_WEBHOOK_SECRET": "stannp-secret",
    "STRIPE_API_KEY": "sk_live_abc",
    "CLOUDFLARE_ACCOUNT_ID": "acct",
    "CLOUDFLARE_IMAGES_TOKEN": "cf-token",
    "CLOUDFLARE_ACCOUNT_HASH": "hash",
    "PROOF_IMAGE_ID_KEY": "proof-key",
    "MAIL_STATUS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/mail-status",
    "IMAGE_DELETION_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/image-deletion",
    "AUDIT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/audit-requests",
    "FARADAY_API_KEY": "faraday-production-key",
    "REPORT_EMAIL_EVENTS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/report-email-events",
    "SES_CONFIGURATION_SET": "mail-pipeline-reports",
    "REPORT_EMAIL_SENDER": "reports@mail-pipeline.example.com",
    "REPORT_RECIPIENT_TEMPLATE": "csm+{slug}@mail-pipeline.example.com",
    "MAIL_PIPELINE_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/secret",
    "MAIL_PIPELINE_UPLOADS_BUCKET": "brand-uploads",
}

#: Test credentials and sandbox settings (a staging deployment may use them).
TEST_SETTINGS = {
    "MAIL_PIPELINE_DATABASE_URL": "sqlite:////tmp/staging.sqlite",
    "LOB_API_KEY": "test_abc",
    "STRIPE_API_KEY": "sk_test_abc",
    "MAIL_PIPELINE_PRINTERS_TEST_MODE": "1",
}
