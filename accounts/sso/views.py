"""The SSO settings pages of an organization (owners only): the IdP, who gets in, the
group mapping, and "test connection"."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import done

from ..models import SsoConnection, SsoGroupMapping, SsoIdentity
from ..views.base import OrgView
from . import services
from .enforcement import connection_of, signed_in_through
from .flow import TEST_STATE_KEY
from .forms import SamlIdpForm, SsoAccessForm, SsoMappingForm
from .idp_redirects import allow_form_posts_to_idp
from .saml_idp import sp_urls


class SsoView(OrgView):
    permission = "sso.manage"
    template = "accounts/sso_settings.html"
    connection: SsoConnection | None

    def load_objects(self, **kwargs: Any) -> None:
        self.connection = connection_of(self.organization)

    def page(self, **forms: Any) -> HttpResponse:
        connection = self.connection
        context: dict[str, Any] = {
            "connection": connection,
            "sp": sp_urls(self.request, self.organization.slug),
            "idp_form": forms.get("idp_form") or SamlIdpForm(initial=self._idp_initial()),
            "mapping_form": forms.get("mapping_form")
            or SsoMappingForm(organization=self.organization),
        }
        if connection is not None:
            context.update(
                access_form=forms.get("access_form")
                or SsoAccessForm(
                    initial=SsoAccessForm.initial_for(connection), organization=self.organization
                ),
                mappings=SsoGroupMapping.objects.filter(connection=connection).select_related(
                    "project"
                ),
                identity_count=SsoIdentity.objects.filter(connection=connection).count(),
                idp=connection.social_app.settings.get("idp", {}),
                certificate_sha256=services.cert_fingerprint(
                    connection.social_app.settings.get("idp", {}).get("x509cert", "")
                ),
                metadata_url=connection.social_app.settings.get("raydeck_metadata_url", ""),
            )
        response = self.render(self.template, context)
        if connection is not None:
            allow_form_posts_to_idp(response, connection)  # "Test connection"
        return response

    def _idp_initial(self) -> dict[str, Any]:
        if self.connection is None:
            return {"groups_attribute": "groups"}
        idp = self.connection.social_app.settings.get("idp", {})
        return {
            "metadata_url": self.connection.social_app.settings.get("raydeck_metadata_url", ""),
            "entity_id": idp.get("entity_id", ""),
            "sso_url": idp.get("sso_url", ""),
            "email_attribute": self.connection.email_attribute,
            "name_attribute": self.connection.name_attribute,
            "groups_attribute": self.connection.groups_attribute,
        }

    def settings_url(self) -> str:
        return reverse("sso_settings", args=[self.organization.slug])


class SsoSettingsView(SsoView):
    """The page; POST saves the IdP (creating the SAML connection, switched off)."""

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        return self.page()

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = SamlIdpForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            with service_errors_on(form):
                services.saml_connection_save(
                    organization=self.organization,
                    actor=request.user,
                    idp=data["idp"],
                    email_attribute=data["email_attribute"],
                    name_attribute=data["name_attribute"],
                    groups_attribute=data["groups_attribute"],
                )
                return done(request, self.settings_url(), "Identity provider saved.")
        return self.page(idp_form=form)


class SsoConnectionView(SsoView):
    """Pages that need the connection to exist."""

    def load_objects(self, **kwargs: Any) -> None:
        super().load_objects(**kwargs)
        if self.connection is None:
            from django.http import Http404

            raise Http404("No single sign-on connection.")

    @property
    def existing(self) -> SsoConnection:
        assert self.connection is not None  # noqa: S101 (load_objects guarantees it)
        return self.connection


class SsoAccessView(SsoConnectionView):
    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = SsoAccessForm(request.POST, organization=self.organization)
        if form.is_valid():
            with service_errors_on(form):
                services.sso_connection_set_access(
                    connection=self.existing,
                    actor=request.user,
                    actor_signed_in_through=signed_in_through(request, self.existing),
                    **form.cleaned_data,
                )
                return done(request, self.settings_url(), "Access settings saved.")
        return self.page(access_form=form)


class SsoMappingCreateView(SsoConnectionView):
    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = SsoMappingForm(request.POST, organization=self.organization)
        if form.is_valid():
            with service_errors_on(form):
                services.sso_group_mapping_create(
                    connection=self.existing, actor=request.user, **form.cleaned_data
                )
                return done(
                    request,
                    self.settings_url(),
                    "Group mapping added: it applies at each person's next sign-in.",
                )
        return self.page(mapping_form=form)


class SsoMappingDeleteView(SsoConnectionView):
    mapping: SsoGroupMapping

    def load_objects(self, **kwargs: Any) -> None:
        super().load_objects(**kwargs)
        self.mapping = self.object_or_404(SsoGroupMapping, pk=kwargs["mapping_id"])

    def get(self, request: AuthedRequest, org_slug: str, mapping_id: int) -> HttpResponse:
        return redirect(self.settings_url())

    def post(self, request: AuthedRequest, org_slug: str, mapping_id: int) -> HttpResponse:
        services.sso_group_mapping_delete(mapping=self.mapping, actor=request.user)
        return done(
            request,
            self.settings_url(),
            "Group mapping removed: it applies at each person's next sign-in.",
        )


class SsoRemoveView(SsoConnectionView):
    """ "Remove SSO": a page that says what happens, then the removal itself."""

    remove_template = "accounts/sso_remove.html"

    def confirmation(self, error: str = "") -> HttpResponse:
        connection = self.existing
        user = self.request.user
        impact = services.sso_connection_removal_impact(connection)
        if not error and connection.enforce_sso:
            error = services.ENFORCED_REFUSAL
        elif not error and not user.has_usable_password():
            error = services.ACTOR_CANNOT_SIGN_IN
        return self.render(
            self.remove_template,
            {
                "connection": connection,
                "impact": impact,
                "error": error,
                "actor_has_password": user.has_usable_password(),
            },
        )

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        return self.confirmation()

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        try:
            impact = services.sso_connection_remove(connection=self.existing, actor=request.user)
        except ValidationError as exc:
            return self.confirmation(error=" ".join(exc.messages))
        message = "Single sign-on removed: members now sign in with a password."
        count = impact.members_without_password
        if count == 1:
            message += " 1 member has no password yet and was emailed how to set one."
        elif count:
            message += f" {count} members have no password yet and were emailed how to set one."
        return done(request, self.settings_url(), message)


class SsoTestView(SsoConnectionView):
    """Start a sign-in at the IdP whose answer is only shown here: no one is signed in
    and no membership changes (the state says so; see accounts.sso.flow)."""

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        return redirect(self.settings_url())

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        provider = self.existing.social_app.get_provider(request)
        return provider.redirect(
            request,
            process="login",
            next_url=self.settings_url(),
            **{TEST_STATE_KEY: self.existing.pk},
        )
