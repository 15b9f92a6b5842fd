"""Create the AWS resources the compose stack's processes expect, on its moto server: the four
SQS queues (each with its dead-letter queue) at the URLs their variables name, the step-log
and uploads buckets, and the report sender's SES identity. Idempotent: `docker compose up`
runs it before every start."""

import os
from urllib.parse import urlparse

import boto3

from mail_pipeline.integrations.queues.sqs_setup import ensure_queue_with_dlq, make_sqs_client

QUEUE_VARIABLES = (
    "MAIL_STATUS_QUEUE_URL",
    "IMAGE_DELETION_QUEUE_URL",
    "AUDIT_QUEUE_URL",
    "REPORT_EMAIL_EVENTS_QUEUE_URL",
)
BUCKET_VARIABLES = ("DAGSTER_COMPUTE_LOGS_BUCKET", "MAIL_PIPELINE_UPLOADS_BUCKET")
#: The queues resource's visibility timeout (resources.queues.QueuesResource).
VISIBILITY_TIMEOUT = 120


def main() -> None:
    sqs = make_sqs_client(region_name=os.environ["AWS_REGION"])
    for variable in QUEUE_VARIABLES:
        name = urlparse(os.environ[variable]).path.rsplit("/", 1)[-1]
        url, dlq_url = ensure_queue_with_dlq(sqs, name, visibility_timeout=VISIBILITY_TIMEOUT)
        print(f"{variable}: {url} (dead letters: {dlq_url})")
    s3 = boto3.client("s3", region_name=os.environ["AWS_REGION"])
    for variable in BUCKET_VARIABLES:
        s3.create_bucket(Bucket=os.environ[variable])
        print(f"{variable}: s3://{os.environ[variable]}")
    ses = boto3.client("ses", region_name=os.environ["AWS_REGION"])
    ses.verify_email_identity(EmailAddress=os.environ["REPORT_EMAIL_SENDER"])
    print(f"REPORT_EMAIL_SENDER: {os.environ['REPORT_EMAIL_SENDER']} (verified)")


if __name__ == "__main__":
    main()
