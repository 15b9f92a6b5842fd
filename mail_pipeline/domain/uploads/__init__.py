"""Uploaded recipient lists (CSV) for one_off campaigns: the pure parse-and-validate half.

    verdict = read_upload(data, UploadCampaign(campaign_id, destination, email_keys, ...))
    if verdict.committable:
        insert verdict.accepted (values, profile_id, source=RECIPIENT_SOURCE)
    report_csv(verdict)       # back to the uploader
    report_markdown(verdict)  # run metadata

The stages, each its own module: :mod:`.files` (bytes -> text, separator, records with their
line numbers, size limits), :mod:`.columns` (headers -> recipient fields and personalization
properties), :mod:`.batch` (each row judged by the sync's rules, dedupe, the batch's
verdict, profile ids), :mod:`.report` (the per-row CSV report and the Markdown summary).
``docs/uploads.md`` states every rule for the people who upload and support the lists.
"""

from mail_pipeline.domain.uploads.batch import (
    NO_ADDRESS,
    RECIPIENT_SOURCE,
    SKIPPED,
    AcceptedRow,
    RowOutcome,
    RowStatus,
    UploadCampaign,
    UploadVerdict,
    read_upload,
    upload_profile_id,
)
from mail_pipeline.domain.uploads.columns import (
    SPELLINGS,
    Column,
    ColumnMap,
    column_of,
    resolve_columns,
    split_full_name,
)
from mail_pipeline.domain.uploads.files import (
    MAX_ROWS,
    MAX_UPLOAD_BYTES,
    DecodedText,
    FileRejected,
    decode_upload,
    detect_separator,
)
from mail_pipeline.domain.uploads.report import mask_email, report_csv, report_markdown

__all__ = [
    "MAX_ROWS",
    "MAX_UPLOAD_BYTES",
    "NO_ADDRESS",
    "RECIPIENT_SOURCE",
    "SKIPPED",
    "SPELLINGS",
    "AcceptedRow",
    "Column",
    "ColumnMap",
    "DecodedText",
    "FileRejected",
    "RowOutcome",
    "RowStatus",
    "UploadCampaign",
    "UploadVerdict",
    "column_of",
    "decode_upload",
    "detect_separator",
    "mask_email",
    "read_upload",
    "report_csv",
    "report_markdown",
    "resolve_columns",
    "split_full_name",
    "upload_profile_id",
]
