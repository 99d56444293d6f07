"""The SSO settings pages: owners connect a SAML IdP (metadata XML, or by hand; a
metadata URL is fetched only from public HTTPS addresses), see what to give their
IdP, decide who gets in, and map groups to roles. Everything is audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import AuditEvent, SsoConnection, SsoGroupMapping
from tests.conftest import Tenant, client_for

from .sso_helpers import idp_for

pytestmark = pytest.mark.django_db


def settings_url(slug: str = "alpha") -> str:
    return reverse("sso_settings", args=[slug])


def test_only_owners_see_the_sso_page(tenant_a: Tenant) -> None:
    assert client_for(tenant_a.owner).get(settings_url()).status_code == 200
    for role in ("admin", "member", "viewer"):
        assert client_for(tenant_a.users[role]).get(settings_url()).status_code == 403
        response = client_for(tenant_a.users[role]).post(
            settings_url(), {"metadata_xml": idp_for("alpha").metadata()}
        )
        assert response.status_code == 403


def test_the_page_shows_what_to_give_the_idp(tenant_a: Tenant) -> None:
    page = client_for(tenant_a.owner).get(settings_url()).content.decode()
    assert "http://testserver/accounts/saml/alpha/metadata/" in page
    assert "http://testserver/accounts/saml/alpha/acs/" in page
    assert page.count('data-copy="#sp-') == 3
    assert (
        reverse("sso_settings", args=["alpha"])
        in client_for(tenant_a.owner).get(reverse("project_list", args=["alpha"])).content.decode()
    )


def test_connecting_an_idp_by_metadata_xml(tenant_a: Tenant) -> None:
    owner = client_for(tenant_a.owner)
    idp = idp_for("alpha")
    response = owner.post(
        settings_url(), {"metadata_xml": idp.metadata(), "groups_attribute": "memberOf"}
    )
    assert response.status_code == 302
    connection = SsoConnection.objects.get(organization=tenant_a.org)
    app = connection.social_app
    assert (app.provider, app.client_id, app.provider_id) == ("saml", "alpha", "saml-alpha")
    assert app.settings["idp"] == {
        "entity_id": idp.entity_id,
        "sso_url": idp.sso_url,
        "x509cert": idp.key.cert_b64,
    }
    assert app.settings["advanced"]["want_assertion_signed"] is True
    assert app.settings["advanced"]["reject_idp_initiated_sso"] is True
    assert connection.groups_attribute == "memberOf"
    assert connection.enabled is False  # until an owner switches it on
    event = AuditEvent.objects.get(verb__in=["sso.connection_create", "sso.connection_update"])
    assert event.changes["idp_entity_id"][1] == idp.entity_id
    page = owner.get(settings_url()).content.decode()
    assert idp.entity_id in page
    # The SP metadata allauth serves names the same ACS.
    metadata = owner.get(reverse("saml_metadata", args=["alpha"]))
    assert metadata.status_code == 200
    assert b"http://testserver/accounts/saml/alpha/acs/" in metadata.content


def test_connecting_an_idp_by_hand_with_a_pem_certificate(tenant_a: Tenant) -> None:
    idp = idp_for("alpha")
    response = client_for(tenant_a.owner).post(
        settings_url(),
        {"entity_id": idp.entity_id, "sso_url": idp.sso_url, "x509cert": idp.key.cert_pem.decode()},
    )
    assert response.status_code == 302
    app = SsoConnection.objects.get(organization=tenant_a.org).social_app
    assert app.settings["idp"]["x509cert"] == idp.key.cert_b64


BAD_IDP_SETTINGS = {
    "nothing": ({}, "metadata URL, or its metadata XML"),
    "metadata with a DTD": (
        {"metadata_xml": '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'},
        "not valid SAML IdP metadata",
    ),
    "metadata that is not XML": ({"metadata_xml": "hello"}, "not valid SAML IdP metadata"),
    "a certificate that is not one": (
        {"entity_id": "https://idp.test/", "sso_url": "https://idp.test/sso", "x509cert": "abc"},
        "not an X.509 certificate",
    ),
    "plain HTTP sign-on URL": (
        {
            "entity_id": "https://idp.test/",
            "sso_url": "http://idp.test/sso",
            "x509cert": idp_for("alpha").key.cert_pem.decode(),
        },
        "sign-on URL must start with https://",
    ),
    "metadata URL over HTTP": ({"metadata_url": "http://idp.test/metadata"}, "https://"),
    "metadata URL on this machine": (
        {"metadata_url": "https://127.0.0.1/metadata"},
        "not a public internet address",
    ),
    "metadata URL on the private network": (
        {"metadata_url": "https://10.1.2.3/metadata"},
        "not a public internet address",
    ),
}


@pytest.mark.parametrize("case", list(BAD_IDP_SETTINGS))
def test_unusable_idp_settings_get_a_clear_error(tenant_a: Tenant, case: str) -> None:
    data, message = BAD_IDP_SETTINGS[case]
    response = client_for(tenant_a.owner).post(settings_url(), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert response.context["idp_form"].errors
    assert not SsoConnection.objects.filter(
        organization=tenant_a.org, social_app__settings__idp__entity_id="https://idp.test/"
    ).exists()


def test_group_mappings_are_added_and_removed(tenant_a: Tenant, tenant_b: Tenant) -> None:
    owner = client_for(tenant_a.owner)
    create = reverse("sso_mapping_create", args=["alpha"])
    response = owner.post(
        create,
        {
            "idp_group": "ml",
            "org_role": "admin",
            "project": tenant_a.project.pk,
            "project_role": "owner",
        },
    )
    assert response.status_code == 302
    mapping = SsoGroupMapping.objects.get(idp_group="ml")
    assert (mapping.org_role, mapping.project, mapping.project_role) == (
        "admin",
        tenant_a.project,
        "owner",
    )
    # Another organization's project is not a choice.
    response = owner.post(
        create, {"idp_group": "x", "org_role": "member", "project": tenant_b.project.pk}
    )
    assert response.status_code == 200
    assert not SsoGroupMapping.objects.filter(idp_group="x").exists()
    # The same group and project twice.
    response = owner.post(
        create, {"idp_group": "ml", "org_role": "member", "project": tenant_a.project.pk}
    )
    assert response.status_code == 200
    assert "already has a mapping" in response.content.decode()

    delete = reverse("sso_mapping_delete", args=["alpha", mapping.pk])
    assert owner.post(delete).status_code == 302
    assert not SsoGroupMapping.objects.filter(pk=mapping.pk).exists()
    verbs = set(AuditEvent.objects.filter(actor=tenant_a.owner).values_list("verb", flat=True))
    assert {"sso.mapping_create", "sso.mapping_delete"} <= verbs


def test_switching_sso_on_and_choosing_the_default_role(tenant_a: Tenant) -> None:
    owner = client_for(tenant_a.owner)
    response = owner.post(
        reverse("sso_access", args=["alpha"]), {"enabled": "on", "default_role": "viewer"}
    )
    assert response.status_code == 302
    connection = SsoConnection.objects.get(organization=tenant_a.org)
    assert (connection.enabled, connection.default_role) == (True, "viewer")
    event = AuditEvent.objects.get(verb="sso.access_update")
    assert event.changes["enabled"] == [False, True]
    # Requiring SSO while it is off is refused.
    response = owner.post(
        reverse("sso_access", args=["alpha"]),
        {"default_role": "viewer", "enforce_sso": "on", "break_glass_user": tenant_a.owner.pk},
    )
    assert response.status_code == 200
    assert "Switch single sign-on on" in response.content.decode()
