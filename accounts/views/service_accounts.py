"""Service account pages: list, create, detail, issue a token, disable."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse

from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import done, paginate

from .. import selectors
from ..forms import ServiceAccountForm
from ..models import ServiceAccount
from ..services.service_accounts import service_account_create, service_account_disable
from .base import OrgView
from .tokens import TokenCreateView


class ServiceAccountListView(OrgView):
    permission = "service_account.manage"
    template = "accounts/service_account_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        accounts = selectors.service_account_list(
            organization=self.organization, viewer=request.user
        )
        return self.render(self.template, {"page": paginate(request, accounts)})


class ServiceAccountCreateView(OrgView):
    permission = "service_account.manage"
    template = "accounts/service_account_create.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        return self.render(self.template, {"form": ServiceAccountForm()})

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = ServiceAccountForm(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                account = service_account_create(
                    organization=self.organization, actor=request.user, **form.cleaned_data
                )
                return done(
                    request,
                    reverse("service_account_detail", args=[org_slug, account.pk]),
                    f"Service account {account.name} created. Create a token for it below.",
                )
        return self.render(self.template, {"form": form})


def _service_account_of(view: OrgView, service_account_id: int) -> ServiceAccount:
    return get_object_or_404(
        ServiceAccount.objects.visible_to(view.request.user)
        .filter(organization=view.organization)
        .select_related("created_by"),
        pk=service_account_id,
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
