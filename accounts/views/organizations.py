"""Organization pages: create an organization, edit its settings."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.vary import vary_on_headers

from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import done

from ..forms import OrganizationCreateForm, OrganizationSettingsForm
from ..permissions import require
from ..services.organizations import organization_create, organization_update
from .base import OrgView
from .common import is_validation_only


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class OrganizationCreateView(View):
    template = "accounts/organization_create.html"

    def form(self, data: Any = None) -> OrganizationCreateForm:
        form = OrganizationCreateForm(data)
        form.live_check(reverse("organization_create"))
        return form

    def get(self, request: AuthedRequest) -> HttpResponse:
        return render(request, self.template, {"form": self.form()})

    def post(self, request: AuthedRequest) -> HttpResponse:
        form = self.form(request.POST)
        if is_validation_only(request):
            return render(request, "console/_slug_feedback.html", {"form": form, "prefix": "/o/"})
        if form.is_valid():
            with service_errors_on(form):
                org = organization_create(actor=request.user, **form.cleaned_data)
                return done(
                    request,
                    reverse("project_list", args=[org.slug]),
                    f"Organization {org.name} created.",
                )
        return render(request, self.template, {"form": form})


class OrganizationSettingsView(OrgView):
    permission = "organization.view"
    template = "accounts/organization_settings.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = OrganizationSettingsForm(
            initial={
                "name": self.organization.name,
                "max_token_days": self.organization.max_token_days,
            }
        )
        return self.render(self.template, {"form": form})

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        require(request.user, "organization.update", self.organization)
        form = OrganizationSettingsForm(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                organization_update(
                    organization=self.organization, actor=request.user, **form.cleaned_data
                )
                return done(
                    request, reverse("organization_settings", args=[org_slug]), "Settings saved."
                )
        return self.render(self.template, {"form": form})
