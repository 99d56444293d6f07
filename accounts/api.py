"""JSON API of the accounts app: who the token is, its organization, members, projects,
the audit log and API tokens. Same selectors, services and permission table as the
console pages (accounts/views/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.urls import reverse
from ninja import Field, Query, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status

from accounts import api_context as context
from accounts.api_idempotency import idempotent
from kit.api.errors import ApiError, not_found
from kit.api.handlers import answers
from kit.api.pagination import PageParams, page_of
from kit.api.schema import Out
from kit.keyset import keyset_page

from . import selectors
from .models import ApiToken, AuditEvent, Membership, Organization, Project, User
from .services import projects as project_services

router = Router(tags=["organizations"])


# --- Schemas -----------------------------------------------------------------------------


class UserOut(Out):
    id: str
    email: str
    name: str
    kind: str = Field(description='"person", or "service_account" for a service account.')


class TokenOut(Out):
    id: str
    name: str
    read_only: bool
    expires_at: datetime


class OrganizationOut(Out):
    slug: str
    name: str
    role: str | None = Field(description="The token's role here (owner, admin, member, viewer).")


class MeOut(Out):
    user: UserOut
    token: TokenOut
    organization: OrganizationOut


class MemberOut(Out):
    user: UserOut
    role: str
    joined_at: datetime


class ProjectOut(Out):
    slug: str
    name: str
    description: str
    created_at: datetime
    url: str


class ProjectIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    slug: str | None = Field(None, description="Derived from the name when absent.")
    description: str = Field("", max_length=2000)


class AuditTargetOut(Out):
    type: str
    id: str
    repr: str


class AuditEventOut(Out):
    id: str
    at: datetime
    actor: str | None
    action: str
    target: AuditTargetOut
    details: dict[str, Any]


class ApiTokenOut(Out):
    id: str
    name: str
    prefix: str
    owner: str = Field(description="The person's email, or the service account's name.")
    read_only: bool
    expires_at: datetime
    last_used_at: datetime | None
    last_used_ip: str | None
    created_at: datetime
    status: str


class TokenIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int = 30
    read_only: bool = False


class AuditFilters(PageParams):
    action: str = Field(
        "", description="Actions starting with this, e.g. cluster. or cluster.create"
    )
    actor: str = Field("", description="Actors whose email contains this.")


# --- Shapes ------------------------------------------------------------------------------


def user_out(user: Any) -> dict[str, Any]:
    if isinstance(user, User):
        return {"id": str(user.pk), "email": user.email, "name": user.name, "kind": "person"}
    return {"id": f"sa-{user.pk}", "email": "", "name": user.name, "kind": "service_account"}


def organization_out(org: Organization, principal: Any) -> dict[str, Any]:
    return {"slug": org.slug, "name": org.name, "role": principal.org_role(org)}


def project_out(project: Project, org: Organization) -> dict[str, Any]:
    return {
        "slug": project.slug,
        "name": project.name,
        "description": project.description,
        "created_at": project.created_at,
        "url": context.console_url(reverse("project_detail", args=[org.slug, project.slug])),
    }


def member_out(membership: Membership) -> dict[str, Any]:
    return {
        "user": user_out(membership.user),
        "role": membership.role,
        "joined_at": membership.created_at,
    }


def event_out(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": str(event.pk),
        "at": event.created_at,
        "actor": event.actor_email or None,
        "action": event.verb,
        "target": {"type": event.target_type, "id": event.target_id, "repr": event.target_repr},
        "details": event.changes,
    }


def api_token_out(token: ApiToken) -> dict[str, Any]:
    holder = token.holder
    return {
        "id": str(token.pk),
        "name": token.name,
        "prefix": token.prefix,
        "owner": holder.email if isinstance(holder, User) else str(holder),
        "read_only": token.read_only,
        "expires_at": token.expires_at,
        "last_used_at": token.last_used_at,
        "last_used_ip": token.last_used_ip,
        "created_at": token.created_at,
        "status": token.status,
    }


# --- Endpoints -----------------------------------------------------------------------------


@router.get("/me", response=answers(MeOut), tags=["me"])
def me(request: HttpRequest) -> dict[str, Any]:
    """The token's holder, the token itself and its organization."""
    identity = context.identity(request)
    token = identity.token
    return {
        "user": user_out(identity.principal),
        "token": {
            "id": str(token.pk),
            "name": token.name,
            "read_only": identity.read_only,
            "expires_at": token.expires_at,
        },
        "organization": organization_out(identity.organization, identity.principal),
    }


@router.get("/orgs", response=answers(page_of(OrganizationOut)))
def org_list(request: HttpRequest, page: Query[PageParams]) -> dict[str, Any]:
    """The organizations this token acts in: a token belongs to exactly one."""
    principal = context.viewer(request)
    org = context.identity(request).organization
    orgs = Organization.objects.visible_to(principal).filter(pk=org.pk)
    items, cursor = keyset_page(orgs, page, ["slug"])
    return {"items": [organization_out(o, principal) for o in items], "next_cursor": cursor}


@router.get("/orgs/{org}", response=answers(OrganizationOut))
def org_get(request: HttpRequest, org: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    context.require(request, "organization.view", organization)
    return organization_out(organization, context.viewer(request))


@router.get("/orgs/{org}/members", response=answers(page_of(MemberOut)))
def member_list(request: HttpRequest, org: str, page: Query[PageParams]) -> dict[str, Any]:
    organization = context.organization(request, org)
    context.require(request, "member.view", organization)
    memberships = selectors.membership_list(
        organization=organization, viewer=context.viewer(request)
    )
    items, cursor = keyset_page(memberships, page, ["pk"])
    return {"items": [member_out(m) for m in items], "next_cursor": cursor}


@router.get("/orgs/{org}/projects", response=answers(page_of(ProjectOut)), tags=["projects"])
def project_list(request: HttpRequest, org: str, page: Query[PageParams]) -> dict[str, Any]:
    organization = context.organization(request, org)
    context.require(request, "project.list", organization)
    projects = selectors.project_list(organization=organization, viewer=context.viewer(request))
    items, cursor = keyset_page(projects, page, ["name", "pk"])
    return {"items": [project_out(p, organization) for p in items], "next_cursor": cursor}


@router.post("/orgs/{org}/projects", response=answers({201: ProjectOut}), tags=["projects"])
@decorate_view(idempotent)
def project_create(request: HttpRequest, org: str, body: ProjectIn) -> Status:
    organization = context.organization(request, org)
    context.require(request, "project.create", organization)
    project = project_services.project_create(
        organization=organization,
        actor=context.actor(request),
        name=body.name,
        slug=body.slug or "",
        description=body.description,
    )
    return Status(201, project_out(project, organization))


@router.get("/orgs/{org}/projects/{project}", response=answers(ProjectOut), tags=["projects"])
def project_get(request: HttpRequest, org: str, project: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    found = (
        Project.objects.visible_to(context.viewer(request), organization)
        .filter(slug=project)
        .first()
    )
    if found is None:
        raise not_found("project")
    context.require(request, "project.view", found)
    return project_out(found, organization)


@router.get("/orgs/{org}/audit-events", response=answers(page_of(AuditEventOut)), tags=["audit"])
def audit_event_list(request: HttpRequest, org: str, page: Query[AuditFilters]) -> dict[str, Any]:
    """The organization's audit log, newest first (owners and admins)."""
    organization = context.organization(request, org)
    context.require(request, "audit.view", organization)
    events = selectors.audit_event_list(
        organization=organization,
        viewer=context.viewer(request),
        filters={"verb": page.action, "actor": page.actor},
    )
    items, cursor = keyset_page(events, page, ["-created_at", "-pk"])
    return {"items": [event_out(e) for e in items], "next_cursor": cursor}


@router.get("/orgs/{org}/tokens", response=answers(page_of(ApiTokenOut)), tags=["tokens"])
def token_list(request: HttpRequest, org: str, page: Query[PageParams]) -> dict[str, Any]:
    """API tokens: your own; everyone's for owners and admins. Never their secrets."""
    organization = context.organization(request, org)
    context.require(request, "token.view", organization)
    tokens = ApiToken.objects.visible_to(context.viewer(request), organization).select_related(
        "user", "service_account"
    )
    items, cursor = keyset_page(tokens, page, ["-created_at", "-pk"])
    return {"items": [api_token_out(t) for t in items], "next_cursor": cursor}


SESSION_ONLY = (
    "API tokens are made and revoked in the console (or by `raydeck login`), never with "
    "another token: a leaked token must not be able to mint its own successors."
)


@router.post("/orgs/{org}/tokens", response=answers({201: ApiTokenOut}), tags=["tokens"])
def token_create(request: HttpRequest, org: str, body: TokenIn) -> Status:
    """Always refused (403) for API tokens: see the message."""
    context.organization(request, org)
    raise ApiError(403, SESSION_ONLY)


@router.delete("/orgs/{org}/tokens/{id}", response=answers({204: None}), tags=["tokens"])
def token_revoke(request: HttpRequest, org: str, id: str) -> Status:
    """Always refused (403) for API tokens, like creating one; 404 for a token you
    cannot see."""
    organization = context.organization(request, org)
    context.one_or_404(
        ApiToken.objects.visible_to(context.viewer(request), organization),
        "token",
        pk=context.int_id(id),
    )
    raise ApiError(403, SESSION_ONLY)
