"""The local cloud's storage, served by the control plane (the local cloud is this
machine): GET and PUT of one object, allowed by the signed, short-lived token in its URL
(clouds/providers/local_storage.py). No session and no API token: the URL is the grant,
as a presigned S3 URL is."""

from __future__ import annotations

import os
import re
import uuid
from typing import BinaryIO, cast

from django.contrib.auth.decorators import login_not_required
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .choices import CloudKind
from .models import Cloud
from .providers.local import LocalProvider
from .providers.local_storage import StorageTokenError, UploadRefused
from .providers.registry import provider_for

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _content_type(key: str) -> str:
    # Logs open as text in a browser (archived job logs); anything else is bytes.
    return "text/plain; charset=utf-8" if key.endswith(".log") else "application/octet-stream"


def _object_response(body: BinaryIO, key: str, range_header: str) -> HttpResponseBase:
    """The object, or the one byte range asked for (206), as S3 and Cloud Storage answer:
    archived logs are read a page at a time."""
    wanted = _RANGE.fullmatch(range_header.strip())
    if not wanted:
        return FileResponse(body, content_type=_content_type(key))
    with body:
        size = os.fstat(body.fileno()).st_size
        start = int(wanted[1])
        end = min(int(wanted[2]) if wanted[2] else size - 1, size - 1)
        if start > end:
            refusal = _refusal(416, "The range is outside the object.")
            refusal["Content-Range"] = f"bytes */{size}"
            return refusal
        body.seek(start)
        response = HttpResponse(
            body.read(end - start + 1), status=206, content_type=_content_type(key)
        )
    response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response


def _refusal(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": "storage", "message": message}}, status=status)


@csrf_exempt  # no cookies are read: the token in the URL is the only grant
@login_not_required
@require_http_methods(["GET", "HEAD", "PUT"])
def local_object(request: HttpRequest, cloud_uuid: uuid.UUID, key: str) -> HttpResponseBase:
    cloud = Cloud.objects.filter(uuid=cloud_uuid, kind=CloudKind.LOCAL).first()
    if cloud is None:
        return _refusal(404, "No such storage.")
    store = cast(LocalProvider, provider_for(cloud))
    method = "PUT" if request.method == "PUT" else "GET"
    try:
        grant = store.check_token(token=request.GET.get("token", ""), method=method, key=key)
    except (StorageTokenError, ValueError) as exc:
        return _refusal(403, str(exc) if isinstance(exc, StorageTokenError) else "Not valid.")
    if method == "GET":
        try:
            body = store.open_object(key)
        except FileNotFoundError:
            return _refusal(404, "No such object.")
        return _object_response(body, key, request.headers.get("Range", ""))
    try:
        store.receive(grant, request)
    except UploadRefused as exc:
        return _refusal(400, str(exc))
    return HttpResponse(status=200)
