"""Console pages for OpenID Connect settings and domain claims (owners only, beside the
SSO settings page in views.py), and the public "Sign in with SSO" page."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.decorators.cache import never_cache

from kit.forms import service_errors_on
from kit.ratelimit import over_limit
from kit.types import AuthedRequest
from kit.views import done

from ..audit import client_ip
from ..choices import SsoProtocol
from ..models import DomainClaim
from . import domains
from .flow import sso_error
from .forms import DomainClaimForm, OidcIdpForm, SsoStartForm
from .idp_redirects import leave_for_idp
from .oidc import connections as oidc_connections
from .views import SsoView

SSO_STARTS_PER_MINUTE = 20


class OidcSettingsView(SsoView):
    """The OIDC IdP: the redirect URI to register there, issuer, client id and secret.
    Who gets in and the group mapping stay on the SSO settings page."""

    oidc_template = "accounts/sso_oidc.html"

    def oidc_page(self, form: OidcIdpForm | None = None) -> HttpResponse:
        connection = self.connection
        is_oidc = connection is not None and connection.protocol == SsoProtocol.OIDC
        app = connection.social_app if connection is not None and is_oidc else None
        if form is None:
            initial = {"groups_attribute": "groups"}
            if app is not None and connection is not None:
                initial = {
                    "issuer": app.settings.get("server_url", ""),
                    "client_id": app.client_id,
                    "groups_attribute": connection.groups_attribute,
                }
            form = OidcIdpForm(initial=initial, secret_is_set=app is not None)
        provider_id = (
            app.provider_id
            if app is not None
            else oidc_connections.provider_id_for(self.organization)
        )
        replaces_saml = connection is not None and not is_oidc
        return self.render(
            self.oidc_template,
            {
                "connection": connection,
                "replaces_saml": replaces_saml,
                "other_protocol": replaces_saml
                and connection is not None
                and not oidc_connections.may_switch_to_oidc(connection),
                "form": form,
                "redirect_uri": oidc_connections.redirect_uri(self.request, provider_id),
            },
        )

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        return self.oidc_page()

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        connection = self.connection
        secret_is_set = connection is not None and connection.protocol == SsoProtocol.OIDC
        form = OidcIdpForm(request.POST, secret_is_set=secret_is_set)
        if form.is_valid():
            with service_errors_on(form):
                oidc_connections.oidc_connection_save(
                    organization=self.organization, actor=request.user, **form.cleaned_data
                )
                return done(
                    request,
                    self.settings_url(),
                    "OpenID Connect provider saved. Test it, then switch single sign-on on.",
                )
        return self.oidc_page(form)


class DomainListView(SsoView):
    domains_template = "accounts/sso_domains.html"

    def domains_page(self, form: DomainClaimForm | None = None, status: int = 200) -> HttpResponse:
        claims = DomainClaim.objects.filter(organization=self.organization).order_by("domain")
        return self.render(
            self.domains_template,
            {"claims": claims, "form": form or DomainClaimForm()},
            status=status,
        )

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        return self.domains_page()

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = DomainClaimForm(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                claim = domains.domain_claim_create(
                    organization=self.organization,
                    domain=form.cleaned_data["domain"],
                    actor=request.user,
                )
                return done(
                    request,
                    domains_url(self.organization.slug),
                    f"Create the TXT record below for {claim.domain}, then press Verify.",
                )
        return self.domains_page(form)


def domains_url(org_slug: str) -> str:
    return reverse("sso_domains", args=[org_slug])


class DomainClaimView(SsoView):
    claim: DomainClaim

    def load_objects(self, **kwargs: Any) -> None:
        super().load_objects(**kwargs)
        self.claim = self.object_or_404(DomainClaim, pk=kwargs["claim_id"])

    def get(self, request: AuthedRequest, org_slug: str, claim_id: int) -> HttpResponse:
        return redirect(domains_url(org_slug))


class DomainVerifyView(DomainClaimView):
    def post(self, request: AuthedRequest, org_slug: str, claim_id: int) -> HttpResponse:
        try:
            verified = domains.domain_claim_verify(claim=self.claim, actor=request.user)
        except ValidationError as exc:
            messages.error(request, f"{self.claim.domain}: {' '.join(exc.messages)}")
            return redirect(domains_url(org_slug))
        if not verified:
            messages.error(
                request,
                f"No TXT record at {self.claim.domain} holds the verification value yet. "
                "DNS changes can take a while to show: try again in a few minutes.",
            )
            return redirect(domains_url(org_slug))
        return done(
            request,
            domains_url(org_slug),
            f"{self.claim.domain} is verified: its addresses now find your single sign-on.",
        )


class DomainRemoveView(DomainClaimView):
    template = "accounts/sso_domain_remove.html"

    def get(self, request: AuthedRequest, org_slug: str, claim_id: int) -> HttpResponse:
        return self.render(self.template, {"claim": self.claim})

    def post(self, request: AuthedRequest, org_slug: str, claim_id: int) -> HttpResponse:
        domains.domain_claim_remove(claim=self.claim, actor=request.user)
        return done(request, domains_url(org_slug), f"{self.claim.domain} removed.")


@method_decorator([login_not_required, never_cache], name="dispatch")
class SsoStartView(View):
    """ "Sign in with SSO": a work email (routed by a verified domain) or an
    organization's URL name, then straight to that organization's IdP.

    What it tells: one message for every miss (no such organization, SSO off, domain
    unclaimed or unverified), so it reveals only what a successful redirect would
    anyway: that this organization has single sign-on on, and at which IdP."""

    template = "accounts/sso_start.html"
    NO_MATCH = (
        "No single sign-on matches that. Check the address or your organization's URL "
        "name, or sign in with your password."
    )

    def get(self, request: HttpRequest) -> HttpResponse:
        form = SsoStartForm(initial={"identifier": request.GET.get("identifier", "")})
        return self.page(request, form)

    def post(self, request: HttpRequest) -> HttpResponse:
        if over_limit(f"sso-start:{client_ip(request)}", SSO_STARTS_PER_MINUTE):
            form = SsoStartForm(request.POST)
            form.is_valid()
            form.add_error(None, "Too many attempts. Wait a minute and try again.")
            return self.page(request, form, status=429)
        form = SsoStartForm(request.POST)
        if not form.is_valid():
            return self.page(request, form, status=400)
        identifier = form.cleaned_data["identifier"]
        connection = domains.connection_for_sign_in(identifier)
        if connection is None:
            form.add_error("identifier", self.NO_MATCH)
            return self.page(request, form, status=404)
        if not request.META.get("HTTP_HOST"):
            return sso_error(request, "The request has no Host header.", 400)
        provider = connection.social_app.get_provider(request)
        kwargs: dict[str, Any] = {}
        if connection.protocol == SsoProtocol.OIDC and "@" in identifier:
            kwargs["auth_params"] = {**provider.get_auth_params(), "login_hint": identifier}
        response = provider.redirect(
            request, process="login", next_url=self.next_url(request), **kwargs
        )
        return leave_for_idp(request, response)

    def next_url(self, request: HttpRequest) -> str | None:
        next_url = request.POST.get("next") or request.GET.get("next")
        if next_url and url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return next_url
        return None

    def page(self, request: HttpRequest, form: SsoStartForm, status: int = 200) -> HttpResponse:
        next_url = self.next_url(request)
        return render(request, self.template, {"form": form, "next": next_url}, status=status)
