"""JSON API of the clouds app: the organization's clouds (read only; they are
registered and verified in the console)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router

from accounts import api_context as context
from kit.api.errors import answers
from kit.api.pagination import PageParams, keyset_page, page_of
from kit.api.schema import Out

from . import selectors
from .models import Cloud

router = Router(tags=["clouds"])


class CloudOut(Out):
    id: str
    name: str
    kind: str
    status: str
    status_reason: str
    region: str
    created_at: datetime
    verified_at: datetime | None


def cloud_out(cloud: Cloud) -> dict[str, Any]:
    return {
        "id": str(cloud.pk),
        "name": cloud.name,
        "kind": cloud.kind,
        "status": cloud.state,
        "status_reason": cloud.state_reason,
        "region": cloud.region,
        "created_at": cloud.created_at,
        "verified_at": cloud.verified_at,
    }


@router.get("/orgs/{org}/clouds", response=answers(page_of(CloudOut)))
def cloud_list(request: HttpRequest, org: str, page: Query[PageParams]) -> dict[str, Any]:
    organization = context.organization(request, org)
    context.require(request, "cloud.view", organization)
    clouds = selectors.cloud_list(organization=organization, viewer=context.viewer(request))
    items, cursor = keyset_page(clouds, page, ["name", "pk"])
    return {"items": [cloud_out(c) for c in items], "next_cursor": cursor}


@router.get("/orgs/{org}/clouds/{id}", response=answers(CloudOut))
def cloud_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    cloud = context.one_or_404(
        Cloud.objects.visible_to(context.viewer(request)),
        "cloud",
        organization=organization,
        pk=context.int_id(id),
    )
    context.require(request, "cloud.view", cloud)
    return cloud_out(cloud)
