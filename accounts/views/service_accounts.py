"""Service account pages: list, create, detail, issue a token, disable."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from kit.types import AuthedRequest
from kit.views import done, paginate

from .. import selectors
from ..forms import ServiceAccountForm
from ..models import ServiceAccount
from ..services.service_accounts import service_account_create, service_account_disable
from .base import OrgFormView, OrgListView, OrgView
from .tokens import TokenCreateView


class ServiceAccountListView(OrgListView):
    permission = "service_account.manage"
    manage_permission = "service_account.manage"
    template = "accounts/service_account_list.html"

    def rows(self) -> QuerySet[ServiceAccount]:
        return selectors.service_account_list(
            organization=self.organization, viewer=self.request.user
        )


class ServiceAccountCreateView(OrgFormView):
    permission = "service_account.manage"
    template = "accounts/service_account_create.html"
    form_class = ServiceAccountForm

    def submitted(self, form: forms.Form) -> HttpResponse:
        account = service_account_create(
            organization=self.organization, actor=self.request.user, **form.cleaned_data
        )
        return done(
            self.request,
            reverse("service_account_detail", args=[self.organization.slug, account.pk]),
            f"Service account {account.name} created. Create a token for it below.",
        )


def _service_account_of(view: OrgView, service_account_id: int) -> ServiceAccount:
    return view.object_or_404(
        view.scoped(ServiceAccount).select_related("created_by"), pk=service_account_id
    )


class ServiceAccountObjectView(OrgView):
    permission = "service_account.manage"
    service_account: ServiceAccount

    def load_objects(self, **kwargs: Any) -> None:
        self.service_account = _service_account_of(self, kwargs["service_account_id"])


class ServiceAccountDetailView(ServiceAccountObjectView):
    template = "accounts/service_account_detail.html"

    def get(self, request: AuthedRequest, org_slug: str, service_account_id: int) -> HttpResponse:
        tokens = self.service_account.tokens.select_related("created_by").order_by(
            "-created_at", "-pk"
        )
        return self.render(
            self.template,
            {"service_account": self.service_account, "page": paginate(request, tokens)},
        )


class ServiceAccountTokenCreateView(TokenCreateView):
    """A token of a service account: the same form and secret page as a personal one."""

    permission = "service_account.manage"

    def load_objects(self, **kwargs: Any) -> None:
        account = _service_account_of(self, kwargs["service_account_id"])
        if account.disabled_at is not None:
            raise Http404("This service account is disabled.")
        self.service_account = account


class ServiceAccountDisableView(ServiceAccountObjectView):
    template = "accounts/service_account_disable.html"

    def get(self, request: AuthedRequest, org_slug: str, service_account_id: int) -> HttpResponse:
        return self.render(
            self.template,
            {
                "service_account": self.service_account,
                "active_tokens": self.service_account.tokens.active().count(),
            },
        )

    def post(self, request: AuthedRequest, org_slug: str, service_account_id: int) -> HttpResponse:
        account = self.service_account
        try:
            service_account_disable(service_account=account, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("service_account_detail", org_slug, account.pk)
        return done(
            request,
            reverse("service_account_list", args=[org_slug]),
            f"Service account {account.name} disabled; its tokens no longer work.",
        )
