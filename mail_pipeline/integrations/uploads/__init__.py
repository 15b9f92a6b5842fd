"""Where uploaded CSV lists arrive: a local folder (the sandbox, ``make run``) or an S3
prefix (production). Both list the files below their root with a version that changes when
a file is replaced, and read a file's bytes."""

from mail_pipeline.integrations.uploads.stores import (
    LocalUploadFolder,
    S3UploadPrefix,
    UploadFile,
    UploadStore,
)

__all__ = ["LocalUploadFolder", "S3UploadPrefix", "UploadFile", "UploadStore"]
