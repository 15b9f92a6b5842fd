"""Where uploaded CSV lists arrive, as a resource: a local folder (local and test: the
sandbox, ``MAIL_PIPELINE_DATA_DIR/uploads``) or an S3 prefix through dagster-aws's
``S3Resource`` (production)."""

from abc import abstractmethod

import dagster as dg
from dagster_aws.s3 import S3Resource

from mail_pipeline.integrations.uploads import LocalUploadFolder, S3UploadPrefix, UploadStore


class UploadsResource(dg.ConfigurableResource):
    @abstractmethod
    def store(self) -> UploadStore: ...


class LocalUploads(UploadsResource):
    folder: str

    def store(self) -> UploadStore:
        return LocalUploadFolder(self.folder)


class S3Uploads(UploadsResource):
    s3: S3Resource
    bucket: str
    prefix: str = "uploads"

    def store(self) -> UploadStore:
        return S3UploadPrefix(self.s3.get_client(), self.bucket, self.prefix)
