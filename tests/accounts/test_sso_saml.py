"""SAML sign-in through the ACS, end to end with a test IdP (tests/accounts/saml_idp.py,
the stand-in for a company's IdP on the internet; no network): the happy path, and
every attack the issue lists refused with no session and no user created."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.choices import OrgRole
from accounts.models import AuditEvent, Membership, SsoIdentity, User
from accounts.sso import services
from tests.conftest import Tenant

from .saml_idp import encode
from .sso_helpers import (
    browser,
    connect,
    idp_for,
    post_to_acs,
    signed_in_user_id,
    sp_for,
    start_sign_in,
)

pytestmark = pytest.mark.django_db

ALICE = "alice@alpha-corp.test"


def alice_attributes(*groups: str) -> dict[str, list[str]]:
    return {"email": [ALICE], "displayName": ["Alice Example"], "groups": list(groups)}


@pytest.fixture
def alpha_sso(tenant_a: Tenant):
    connection = connect(tenant_a.owner, tenant_a.org, idp_for("alpha"))
    services.sso_group_mapping_create(
        connection=connection, actor=tenant_a.owner, idp_group="raydeck-admins",
        org_role=OrgRole.ADMIN,
    )  # fmt: skip
    return connection


def test_a_full_saml_sign_in_creates_the_user_and_membership_with_the_mapped_role(
    tenant_a: Tenant, alpha_sso
) -> None:
    client = browser()
    request_id = start_sign_in(client, "alpha")
    answer = idp_for("alpha").signed_response(
        sp_for("alpha"),
        in_response_to=request_id,
        name_id=ALICE,
        attributes=alice_attributes("raydeck-admins", "everyone"),
    )
    response = post_to_acs(client, "alpha", encode(answer))

    assert response.status_code == 302
    assert response["Location"] == reverse("project_list", args=["alpha"])
    alice = User.objects.get(email=ALICE)
    assert alice.name == "Alice Example"
    assert not alice.has_usable_password()
    assert signed_in_user_id(client) == alice.pk
    assert Membership.objects.get(organization=tenant_a.org, user=alice).role == OrgRole.ADMIN
    assert SsoIdentity.objects.get(connection=alpha_sso, subject=ALICE).user == alice
    verbs = set(AuditEvent.objects.filter(organization=tenant_a.org).values_list("verb", flat=True))
    assert {"user.create_sso", "sso.identity_create", "sso.member_add", "sso.login"} <= verbs
    # The session works on the organization's pages.
    assert client.get(reverse("project_list", args=["alpha"])).status_code == 200
