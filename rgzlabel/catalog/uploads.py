"""A per-file size limit on uploads (``RGZ_MAX_UPLOAD_BYTES``), enforced while the file streams in.

Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` limits the non-file part of a request and
``FILE_UPLOAD_MAX_MEMORY_SIZE`` only decides when an upload goes to a temporary file; neither
limits how large a file may be. This handler, first in ``FILE_UPLOAD_HANDLERS``, stops reading
a file once it passes the limit (the rest of it is discarded, never stored), and remembers its
name on the request so that the page says which file was refused and why.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import HttpRequest


class SizeLimitedUploadHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > settings.RGZ_MAX_UPLOAD_BYTES:
            refused = getattr(self.request, "oversized_uploads", [])
            refused.append(self.file_name or "(no name)")
            setattr(self.request, "oversized_uploads", refused)  # noqa: B010 (an attribute HttpRequest does not declare)
            raise SkipFile()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handlers (memory or temporary file) store the file


def oversized_upload_error(request: HttpRequest) -> str | None:
    """The message for files refused by :class:`SizeLimitedUploadHandler` in this request, if any."""
    refused = getattr(request, "oversized_uploads", None)
    if not refused:
        return None
    limit_mib = settings.RGZ_MAX_UPLOAD_BYTES / 2**20
    return f"{', '.join(refused)}: larger than the upload limit of {limit_mib:g} MiB (RGZ_MAX_UPLOAD_BYTES)"
