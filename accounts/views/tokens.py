"""API token pages: list, create (the secret is shown once), revoke."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers

from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import done, paginate

from .. import selectors
from ..forms import TokenCreateForm, TokenFilterForm
from ..models import (
    ApiToken,
    ServiceAccount,
)
from ..permissions import has_perm
from ..services.tokens import token_create, token_revoke
from .base import OrgView


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class TokenListView(OrgView):
    """Your tokens; owners and admins also get every token of the organization
    (?scope=all), with a filter."""

    permission = "token.manage_own"
    template = "accounts/token_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        can_manage_all = has_perm(request.user, "token.manage_all", self.organization)
        scope = "all" if can_manage_all and request.GET.get("scope") == "all" else "mine"
        form = TokenFilterForm(request.GET or None)
        filters = form.cleaned_data if form.is_valid() else {}
        tokens = selectors.token_list(
            organization=self.organization,
            viewer=request.user,
            mine=scope == "mine",
            query=filters.get("q", "").strip(),
            status=filters.get("status", ""),
            kind=filters.get("kind", "") if scope == "all" else "",
        )
        query = request.GET.copy()
        query.pop("page", None)
        return self.render(
            self.partial(self.template, "token-table"),
            {
                "page": paginate(request, tokens),
                "form": form,
                "scope": scope,
                "show_holder": scope == "all",
                "tokens_url": reverse("token_list", args=[org_slug]),
                "filtered": any(filters.get(k) for k in ("q", "status", "kind")),
                "query": query.urlencode(),
                "can_manage_all": can_manage_all,
                "can_manage_service_accounts": has_perm(
                    request.user, "service_account.manage", self.organization
                ),
            },
        )


def _secret_page(response: HttpResponse) -> HttpResponse:
    """The page that shows a new secret must not be kept by a browser or a proxy."""
    add_never_cache_headers(response)  # Cache-Control: ... no-store ...
    return response


class TokenCreateView(OrgView):
    """Create a personal token; the secret is shown once, in the answer to the POST
    itself (never stored, so there is nothing to redirect to)."""

    permission = "token.manage_own"
    template = "accounts/token_create.html"
    service_account: ServiceAccount | None = None

    def holder_role(self) -> str:
        if self.service_account is not None:
            return self.service_account.role
        return self.request.user.org_role(self.organization) or ""

    def form(self, data: Any = None) -> TokenCreateForm:
        return TokenCreateForm(data, organization=self.organization, holder_role=self.holder_role())

    def back_url(self) -> str:
        if self.service_account is not None:
            return reverse(
                "service_account_detail", args=[self.organization.slug, self.service_account.pk]
            )
        return reverse("token_list", args=[self.organization.slug])

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {"service_account": self.service_account, "back_url": self.back_url()}
        return super().render(template, {**base, **(context or {})}, status)

    def get(self, request: AuthedRequest, org_slug: str, **kwargs: Any) -> HttpResponse:
        return self.render(self.template, {"form": self.form()})

    def post(self, request: AuthedRequest, org_slug: str, **kwargs: Any) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                token, secret = token_create(
                    organization=self.organization,
                    actor=request.user,
                    service_account=self.service_account,
                    **form.cleaned_data,
                )
                return _secret_page(
                    self.render("accounts/token_created.html", {"token": token, "secret": secret})
                )
        return self.render(self.template, {"form": form})


class TokenObjectView(OrgView):
    """Base of pages about one token: found among the tokens the user may see in this
    organization (their own; all of them for owners and admins), 404 otherwise."""

    permission = "token.manage_own"
    token: ApiToken

    def load_objects(self, **kwargs: Any) -> None:
        self.token = self.object_or_404(
            self.scoped(ApiToken).select_related("organization", "user", "service_account"),
            pk=kwargs["token_id"],
        )


class TokenRevokeView(TokenObjectView):
    template = "accounts/token_revoke.html"

    def back_url(self) -> str:
        if self.token.service_account_id is not None:
            return reverse(
                "service_account_detail",
                args=[self.organization.slug, self.token.service_account_id],
            )
        if self.token.user_id == self.request.user.pk:
            return reverse("token_list", args=[self.organization.slug])
        return reverse("token_list", args=[self.organization.slug]) + "?scope=all"

    def get(self, request: AuthedRequest, org_slug: str, token_id: int) -> HttpResponse:
        return self.render(self.template, {"token": self.token, "back_url": self.back_url()})

    def post(self, request: AuthedRequest, org_slug: str, token_id: int) -> HttpResponse:
        try:
            token_revoke(token=self.token, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect(self.back_url())
        return done(request, self.back_url(), f"Token {self.token.name} revoked.")
