"""The audit log: the filtered page and its JSON Lines export."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers

from kit.types import AuthedRequest
from kit.views import paginate

from .. import selectors
from ..forms import AuditFilterForm
from .base import OrgView


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class AuditLogView(OrgView):
    permission = "audit.view"
    template = "accounts/audit_log.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = AuditFilterForm(request.GET or None)
        filters = form.cleaned_data if form.is_valid() else {}
        events = selectors.audit_event_list(
            organization=self.organization, viewer=request.user, filters=filters
        )
        query = request.GET.copy()
        query.pop("page", None)
        return self.render(
            self.partial(self.template, "audit-table"),
            {
                "form": form,
                "page": paginate(request, events),
                "query": query.urlencode(),
            },
        )


class AuditExportView(OrgView):
    """The filtered audit log as JSON Lines, streamed so a large log needs no memory."""

    permission = "audit.view"

    def get(self, request: AuthedRequest, org_slug: str) -> StreamingHttpResponse:
        form = AuditFilterForm(request.GET or None)
        filters = form.cleaned_data if form.is_valid() else {}
        events = selectors.audit_event_list(
            organization=self.organization, viewer=request.user, filters=filters
        ).select_related("organization")

        def lines() -> Iterator[str]:
            for event in events.iterator(chunk_size=2000):
                yield json.dumps(event.as_json(), separators=(",", ":")) + "\n"

        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = StreamingHttpResponse(lines(), content_type="application/jsonl")
        response["Content-Disposition"] = (
            f'attachment; filename="raydeck-audit-{org_slug}-{stamp}.jsonl"'
        )
        return response
