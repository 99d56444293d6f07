"""An organization's OIDC connection, saved from the SSO settings page: the issuer, client
and encrypted secret as allauth's SocialApp; an unused SAML connection may switch to OIDC."""

from __future__ import annotations

from allauth.socialaccount.models import SocialApp
from django.contrib.sites.models import Site
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse

from kit.crypto import encrypt

from ...audit import audit
from ...choices import SsoProtocol
from ...models import Organization, SsoConnection, User
from ...permissions import require
from .documents import forget_idp_documents
from .provider import OIDC_PROVIDER


def provider_id_for(organization: Organization) -> str:
    return f"oidc-{organization.slug}"


def redirect_uri(request: HttpRequest, provider_id: str) -> str:
    """The callback URL to register at the IdP."""
    return request.build_absolute_uri(
        reverse("openid_connect_callback", kwargs={"provider_id": provider_id})
    )


def oidc_connection_save(
    *,
    organization: Organization,
    actor: User,
    issuer: str,
    client_id: str,
    client_secret: str,
    groups_attribute: str,
) -> SsoConnection:
    """Create or update the organization's OIDC connection (created switched off).
    The issuer is checked by fetching its discovery document first. An empty
    `client_secret` keeps the stored one; the secret is stored encrypted and never
    returned."""
    # The IdP's client imports requests: loaded by the first save, not with the pages.
    from .client import OidcError, discover

    require(actor, "sso.manage", organization)
    issuer = issuer.strip()
    try:
        discover(issuer)
    except OidcError as exc:
        # A trailing slash is the most common difference: accept the IdP's spelling.
        alternative = issuer[:-1] if issuer.endswith("/") else issuer + "/"
        try:
            discover(alternative)
        except OidcError:
            raise ValidationError({"issuer": str(exc)}) from None
        issuer = alternative
    with transaction.atomic():
        connection = (
            SsoConnection.objects.select_for_update()
            .select_related("social_app")
            .filter(organization=organization)
            .first()
        )
        if connection is not None and connection.protocol != SsoProtocol.OIDC:
            return _switch_to_oidc(
                connection, actor, issuer, client_id, client_secret, groups_attribute
            )
        if connection is None:
            if not client_secret:
                raise ValidationError({"client_secret": "Enter the client secret."})
            connection = SsoConnection(
                organization=organization,
                protocol=SsoProtocol.OIDC,
                social_app=_new_app(organization, issuer, client_id, client_secret),
                enabled=False,
                groups_attribute=groups_attribute,
                created_by=actor,
            )
            connection.full_clean()
            connection.save()
            changes: dict[str, list] = {
                "protocol": [None, SsoProtocol.OIDC],
                "issuer": [None, issuer],
                "client_id": [None, client_id],
                "client_secret": [None, "set"],
                "groups_attribute": [None, groups_attribute],
            }
            audit(actor=actor, verb="sso.connection_create", target=connection, changes=changes)
            return connection
        app = connection.social_app
        # The owner saved the IdP again: read its documents afresh at the next sign-in.
        app_id = app.pk
        transaction.on_commit(lambda: forget_idp_documents(app_id=app_id, issuer=issuer))
        changes = {}
        if app.settings.get("server_url") != issuer:
            changes["issuer"] = [app.settings.get("server_url"), issuer]
        if app.client_id != client_id:
            changes["client_id"] = [app.client_id, client_id]
        if client_secret:
            changes["client_secret"] = ["set", "replaced"]
            app.secret = encrypt(client_secret)
        app.client_id = client_id
        app.settings = {**app.settings, "server_url": issuer, "oauth_pkce_enabled": True}
        app.save(update_fields=["client_id", "secret", "settings"])
        if connection.groups_attribute != groups_attribute:
            changes["groups_attribute"] = [connection.groups_attribute, groups_attribute]
            connection.groups_attribute = groups_attribute
            connection.full_clean()
            connection.save(update_fields=["groups_attribute", "updated_at"])
        if changes:
            audit(actor=actor, verb="sso.connection_update", target=connection, changes=changes)
        return connection


def _new_app(organization: Organization, issuer: str, client_id: str, secret: str) -> SocialApp:
    provider_id = provider_id_for(organization)
    if SocialApp.objects.filter(provider=OIDC_PROVIDER, provider_id=provider_id).exists():
        provider_id = f"{provider_id}-{organization.pk}"
    app = SocialApp.objects.create(
        provider=OIDC_PROVIDER,
        provider_id=provider_id,
        name=organization.name[:40],
        client_id=client_id,
        secret=encrypt(secret),
        settings={"server_url": issuer, "oauth_pkce_enabled": True},
    )
    app.sites.add(Site.objects.get_current())
    return app


def may_switch_to_oidc(connection: SsoConnection) -> bool:
    return not connection.enabled and not connection.identities.exists()


def _switch_to_oidc(
    connection: SsoConnection,
    actor: User,
    issuer: str,
    client_id: str,
    client_secret: str,
    groups_attribute: str,
) -> SsoConnection:
    """A SAML connection that is off and nobody ever signed in through becomes OIDC (its
    access settings and group mapping stay). Identities are keyed by the connection, so
    one with people would mix SAML NameIDs with OIDC subjects: refused."""
    if not may_switch_to_oidc(connection):
        raise ValidationError(
            "This organization signs in with SAML, and people have used it or it is on. "
            "Switch single sign-on off and remove the SAML connection first."
        )
    if not client_secret:
        raise ValidationError({"client_secret": "Enter the client secret."})
    old_app = connection.social_app
    connection.social_app = _new_app(connection.organization, issuer, client_id, client_secret)
    connection.protocol = SsoProtocol.OIDC
    connection.groups_attribute = groups_attribute
    connection.full_clean()
    connection.save(update_fields=["social_app", "protocol", "groups_attribute", "updated_at"])
    old_app.delete()
    audit(
        actor=actor,
        verb="sso.connection_update",
        target=connection,
        changes={
            "protocol": [SsoProtocol.SAML, SsoProtocol.OIDC],
            "issuer": [None, issuer],
            "client_id": [None, client_id],
            "client_secret": [None, "set"],
            "groups_attribute": [None, groups_attribute],
        },
    )
    return connection
