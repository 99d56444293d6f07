"""The base of every organization page: the organization comes from the URL, among the
user's own (another organization's pages look missing: 404)."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views import View

from kit.types import AuthedRequest

from ..models import Organization
from ..permissions import require
from ..sso.enforcement import sso_blocks, sso_required_response

SESSION_CURRENT_ORG = "raydeck_org"


class OrgView(View):
    """Base of every page under /o/<org_slug>/.

    The organization comes from the URL and is looked up among the organizations the
    user belongs to, so another organization's pages are indistinguishable from
    missing ones (404). An organization that requires SSO answers a session not signed
    in through its IdP with a page that leads there (accounts.sso.enforcement).
    `permission`, when set, is checked against the organization
    (or `permission_target()`) before the handler runs.
    """

    permission: str | None = None
    organization: Organization
    request: AuthedRequest

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # The same object as `request` (set by setup()), typed as signed in.
        user = self.request.user
        # The user's memberships are their visibility (Organization.visible_to); they
        # are loaded once and also serve role checks and the switcher.
        membership = user.membership_in(kwargs["org_slug"])
        if membership is None:
            raise Http404("No such organization.")
        self.organization = membership.organization
        sso_connection = sso_blocks(request, self.organization)
        if sso_connection is not None:
            return sso_required_response(request, sso_connection)
        if request.session.get(SESSION_CURRENT_ORG) != self.organization.slug:
            request.session[SESSION_CURRENT_ORG] = self.organization.slug
        self.load_objects(**kwargs)
        if self.permission:
            require(user, self.permission, self.permission_target())
        return super().dispatch(request, *args, **kwargs)

    def load_objects(self, **kwargs: Any) -> None:
        """Fetch the URL's other objects, each through `visible_to` and inside
        `self.organization` (404 otherwise). Runs before the permission check."""

    def permission_target(self) -> Any:
        return self.organization

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {
            "organization": self.organization,
            "org_role": self.request.user.org_role(self.organization),
        }
        return render(self.request, template, {**base, **(context or {})}, status=status)

    def partial(self, template: str, name: str) -> str:
        """The named partial of `template` for HTMX requests, the whole page otherwise."""
        if self.request.htmx and not self.request.htmx.boosted:
            return f"{template}#{name}"
        return template
