"""The base of every organization page: the organization comes from the URL, among the
user's own (another organization's pages look missing: 404)."""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.views import View

from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import paginate

from ..models import Organization
from ..permissions import has_perm, require
from ..sso.enforcement import sso_blocks, sso_required_response

SESSION_CURRENT_ORG = "raydeck_org"

M = TypeVar("M", bound=Model)


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

    def scoped(self, model: type[M]) -> QuerySet[M]:
        """The rows of `model` this person may see in the URL's organization: the one
        place a page scopes what it reads (another organization's rows look missing)."""
        return model.objects.visible_to(self.request.user, self.organization)  # type: ignore[attr-defined]

    def object_or_404(self, rows: type[M] | QuerySet[M], **lookup: Any) -> M:
        """One row of `rows` (a model, scoped as above, or an already scoped queryset)
        matching `lookup`, or a 404."""
        queryset = self.scoped(rows) if isinstance(rows, type) else rows
        return get_object_or_404(queryset, **lookup)


class OrgListView(OrgView):
    """A page listing rows of the organization, a page at a time, with whether this
    person may add and change them (`manage_permission`)."""

    template: str
    manage_permission: str

    def rows(self) -> QuerySet:
        raise NotImplementedError

    def get(self, request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.render(
            self.template,
            {
                "page": paginate(request, self.rows()),
                "can_manage": has_perm(request.user, self.manage_permission, self.organization),
            },
        )


class OrgFormView(OrgView):
    """A page with one form whose valid submission asks a service for a change: GET
    shows the form; POST either goes on (`submitted` calls the service and returns where
    to go) or shows the form again with what was wrong, the service's refusals on the
    fields they name."""

    template: str
    form_class: type[forms.Form]

    def form(self, data: Any = None) -> forms.Form:
        return self.form_class(data)

    def context(self, form: forms.Form) -> dict[str, Any]:
        return {"form": form}

    def submitted(self, form: forms.Form) -> HttpResponse:
        raise NotImplementedError

    def get(self, request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.render(self.template, self.context(self.form()))

    def post(self, request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                return self.submitted(form)
        return self.render(self.template, self.context(form))
