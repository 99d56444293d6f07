"""SAML sign-in through the ACS, end to end with a test IdP (tests/accounts/saml_idp.py,
the stand-in for a company's IdP on the internet; no network): the happy path, and
every attack the issue lists refused with no session and no user created."""

from __future__ import annotations

import base64
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from lxml import etree

from accounts.choices import OrgRole
from accounts.models import AuditEvent, Membership, ProjectMembership, SsoIdentity, User
from accounts.sso import services
from tests.conftest import Tenant, client_for
from tests.factories import ApiTokenFactory

from .saml_idp import FakeIdp, assertion_of, authn_request_id, clone, encode, signing_key
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


def alice_answer(request_id: str, *groups: str) -> str:
    """alpha's IdP's genuine, signed answer for Alice."""
    root = idp_for("alpha").signed_response(
        sp_for("alpha"),
        in_response_to=request_id,
        name_id=ALICE,
        attributes=alice_attributes(*groups),
    )
    return encode(root)


@pytest.fixture
def alpha_sso(tenant_a: Tenant):
    connection = connect(tenant_a.owner, tenant_a.org, idp_for("alpha"))
    services.sso_group_mapping_create(
        connection=connection,
        actor=tenant_a.owner,
        idp_group="raydeck-admins",
        org_role=OrgRole.ADMIN,
    )
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


# --- Refused: the IdP's answer is forged, altered or not meant for us ------------------

EVIL = "mallory@alpha-corp.test"
SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
SAMLP_NS = "urn:oasis:names:tc:SAML:2.0:protocol"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"


def _name_id(element):
    return element.find(f".//{{{SAML_NS}}}NameID")


def _signature(element):
    return element.find(f"{{{DS_NS}}}Signature")


def _evil_copy(assertion, *, keep_signature: bool = False, new_id: bool = True):
    evil = clone(assertion)
    if new_id:
        evil.set("ID", "_evil" + evil.get("ID"))
    if not keep_signature:
        evil.remove(_signature(evil))
    _name_id(evil).text = EVIL
    for value in evil.iter(f"{{{SAML_NS}}}AttributeValue"):
        if value.text == ALICE:
            value.text = EVIL
    return evil


def _assertion_signed(idp, request_id, **kwargs):
    """A response whose assertion alone is signed (allowed), so that the only thing
    between a wrapping attack and success is the wrapping check itself."""
    root = idp.response(
        sp_for("alpha"),
        in_response_to=request_id,
        name_id=ALICE,
        attributes=alice_attributes(),
        **kwargs,
    )
    idp.sign(assertion_of(root))
    return root


def xsw_evil_assertion_first(idp, request_id):
    root = _assertion_signed(idp, request_id)
    signed = assertion_of(root)
    signed.addprevious(_evil_copy(signed))
    return encode(root)


def xsw_evil_assertion_wraps_signed_one(idp, request_id):
    root = _assertion_signed(idp, request_id)
    signed = assertion_of(root)
    evil = _evil_copy(signed)
    signed.addprevious(evil)
    evil.append(signed)  # moves the signed assertion inside the evil one
    return encode(root)


def xsw_signed_assertion_hidden_in_extensions(idp, request_id):
    root = _assertion_signed(idp, request_id)
    signed = assertion_of(root)
    evil = _evil_copy(signed, keep_signature=True, new_id=False)
    signed.addprevious(evil)
    extensions = etree.Element(f"{{{SAMLP_NS}}}Extensions")
    root.find(f"{{{SAMLP_NS}}}Status").addprevious(extensions)
    extensions.append(signed)
    return encode(root)


def xsw_signed_assertion_hidden_in_signature_object(idp, request_id):
    root = _assertion_signed(idp, request_id)
    signed = assertion_of(root)
    evil = _evil_copy(signed, keep_signature=True, new_id=False)
    root.replace(signed, evil)
    hidden = etree.SubElement(_signature(evil), f"{{{DS_NS}}}Object")
    hidden.append(signed)
    return encode(root)


def xsw_signed_response_wrapped_in_evil_response(idp, request_id):
    """XSW1: the genuine, fully signed response hides inside an evil one's Signature."""
    genuine = idp.signed_response(
        sp_for("alpha"), in_response_to=request_id, name_id=ALICE, attributes=alice_attributes()
    )
    evil = clone(genuine)
    evil.set("ID", "_evil" + evil.get("ID"))
    evil_assertion = assertion_of(evil)
    evil.replace(evil_assertion, _evil_copy(evil_assertion))
    _signature(evil).append(genuine)
    return encode(evil)


def tampered_after_signing(idp, request_id):
    root = idp.signed_response(
        sp_for("alpha"), in_response_to=request_id, name_id=ALICE, attributes=alice_attributes()
    )
    _name_id(root).text = EVIL
    return encode(root)


def unsigned_response(idp, request_id):
    root = idp.response(
        sp_for("alpha"), in_response_to=request_id, name_id=ALICE, attributes=alice_attributes()
    )
    return encode(root)


def unsigned_assertion_in_signed_response(idp, request_id):
    root = idp.response(
        sp_for("alpha"), in_response_to=request_id, name_id=ALICE, attributes=alice_attributes()
    )
    idp.sign(root)  # only the outer message: allauth's default would accept this
    return encode(root)


def signed_by_an_attacker_key(idp, request_id):
    attacker = FakeIdp(idp.entity_id, key=signing_key("attacker"))
    root = attacker.signed_response(
        sp_for("alpha"), in_response_to=request_id, name_id=ALICE, attributes=alice_attributes()
    )
    return encode(root)


def _signed_with(**changes):
    """A genuine signed answer with some values changed by the IdP itself."""

    def make(idp, request_id):
        values = {"in_response_to": request_id, **changes}
        # Times are relative to when the test runs.
        values = {k: v() if callable(v) else v for k, v in values.items()}
        root = idp.signed_response(
            sp_for("alpha"), name_id=ALICE, attributes=alice_attributes(), **values
        )
        return encode(root)

    return make


def _ago(seconds: int):
    return lambda: datetime.now(tz=UTC) - timedelta(seconds=seconds)


# Each attack, and the reason it must be refused for (so a refusal for another reason,
# e.g. a broken test answer, fails the test).
FORGED = {
    "unsigned response": (unsigned_response, "is not signed"),
    "unsigned assertion in a signed response": (
        unsigned_assertion_in_signed_response,
        "is not signed",
    ),
    "signed by another key": (signed_by_an_attacker_key, "Signature validation failed"),
    "NameID changed after signing": (tampered_after_signing, "Signature validation failed"),
    "XSW: evil assertion before the signed one": (
        xsw_evil_assertion_first,
        "must contain 1 assertion",
    ),
    "XSW: evil assertion wrapping the signed one": (
        xsw_evil_assertion_wraps_signed_one,
        "must contain 1 assertion",
    ),
    "XSW: signed assertion hidden in Extensions": (
        xsw_signed_assertion_hidden_in_extensions,
        "must contain 1 assertion",
    ),
    "XSW: signed assertion hidden in Signature/Object": (
        xsw_signed_assertion_hidden_in_signature_object,
        "must contain 1 assertion",
    ),
    "XSW: signed response wrapped in an evil one": (
        xsw_signed_response_wrapped_in_evil_response,
        "must contain 1 assertion",
    ),
    "wrong audience": (
        _signed_with(audience="https://other-sp.test/metadata/"),
        "not a valid audience",
    ),
    "wrong destination": (
        _signed_with(destination="https://evil.test/acs/"),
        "instead of https://evil.test/acs/",
    ),
    "wrong recipient": (
        _signed_with(recipient="https://evil.test/acs/"),
        "valid SubjectConfirmation was not found",
    ),
    "wrong issuer": (_signed_with(issuer="https://evil-idp.test/"), "Invalid issuer"),
    # Conditions get python3-saml's 300 s of clock drift, SubjectConfirmationData none.
    "expired Conditions NotOnOrAfter": (
        _signed_with(not_on_or_after=_ago(330)),
        "validate timestamp: expired",
    ),
    "expired SubjectConfirmationData NotOnOrAfter": (
        _signed_with(scd_not_on_or_after=_ago(5)),
        "valid SubjectConfirmation was not found",
    ),
    "future NotBefore": (_signed_with(not_before=_ago(-400)), "not yet valid"),
    "InResponseTo this browser never sent": (
        _signed_with(in_response_to="_never-sent-here"),
        "not started in this browser",
    ),
    "IdP-initiated (no InResponseTo)": (
        _signed_with(in_response_to=None),
        "started at the identity provider are not accepted",
    ),
}


def assert_refused(client, response, users_before: int) -> None:
    assert 400 <= response.status_code < 500, response.status_code
    assert signed_in_user_id(client) is None
    assert User.objects.count() == users_before
    assert not User.objects.filter(email__in=[ALICE, EVIL]).exists()
    assert not SsoIdentity.objects.exists()


@pytest.mark.parametrize("attack", list(FORGED), ids=list(FORGED))
def test_forged_or_misdirected_answers_are_refused(tenant_a: Tenant, alpha_sso, attack: str):
    client = browser()
    request_id = start_sign_in(client, "alpha")
    users_before = User.objects.count()
    make, reason = FORGED[attack]
    response = post_to_acs(client, "alpha", make(idp_for("alpha"), request_id))
    assert_refused(client, response, users_before)
    assert reason in response.context["message"] + " " + response.context["detail"]


def test_the_same_builders_sign_in_when_nothing_is_wrong(tenant_a: Tenant, alpha_sso):
    """The control for the attacks above: a response signed only on the assertion (the
    shape the XSW cases start from) is accepted, so their refusals are the attacks'."""
    client = browser()
    request_id = start_sign_in(client, "alpha")
    response = post_to_acs(client, "alpha", encode(_assertion_signed(idp_for("alpha"), request_id)))
    assert response.status_code == 302
    assert signed_in_user_id(client) == User.objects.get(email=ALICE).pk


def test_another_organizations_idp_cannot_sign_in_here(
    tenant_a: Tenant, tenant_b: Tenant, alpha_sso
):
    bravo_idp = idp_for("bravo")
    connect(tenant_b.owner, tenant_b.org, bravo_idp)
    client = browser()
    users_before = User.objects.count()
    # B's IdP, answering with everything addressed to A's ACS and audience.
    request_id = start_sign_in(client, "alpha")
    forged = bravo_idp.signed_response(
        sp_for("alpha"), in_response_to=request_id, name_id=ALICE, attributes=alice_attributes()
    )
    assert_refused(client, post_to_acs(client, "alpha", encode(forged)), users_before)
    # B's genuine answer to a sign-in at B, replayed at A's ACS.
    request_id = start_sign_in(client, "bravo")
    genuine_for_b = bravo_idp.signed_response(
        sp_for("bravo"), in_response_to=request_id, name_id=ALICE, attributes=alice_attributes()
    )
    assert_refused(client, post_to_acs(client, "alpha", encode(genuine_for_b)), users_before)


def test_a_nameid_with_an_xml_comment_is_refused(tenant_a: Tenant, alpha_sso):
    """The IdP signs alice@alpha-corp.test.evil.test; the attacker splits it with a
    comment, which canonicalisation ignores, hoping to be read as alice@alpha-corp.test."""
    client = browser()
    request_id = start_sign_in(client, "alpha")
    signed_name = ALICE + ".evil.test"
    root = idp_for("alpha").signed_response(
        sp_for("alpha"),
        in_response_to=request_id,
        name_id=signed_name,
        attributes={"email": [signed_name]},
    )
    xml = etree.tostring(root).decode()
    injected = xml.replace(signed_name, ALICE + "<!---->.evil.test")
    assert injected != xml
    users_before = User.objects.count()
    response = post_to_acs(client, "alpha", encode(injected))
    assert_refused(client, response, users_before)
    assert "comments" in response.context["message"]
    assert not User.objects.filter(email=signed_name).exists()


DTD_DOCUMENTS = {
    "XXE": (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&xxe;'
        "</samlp:Response>"
    ),
    "billion laughs": (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
            for i in range(1, 10)
        )
        + ']><samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&lol9;'
        "</samlp:Response>"
    ),
}


@pytest.mark.parametrize("kind", list(DTD_DOCUMENTS))
def test_documents_with_a_dtd_are_refused(tenant_a: Tenant, alpha_sso, kind: str):
    client = browser()
    start_sign_in(client, "alpha")
    users_before = User.objects.count()
    response = post_to_acs(client, "alpha", encode(DTD_DOCUMENTS[kind]))
    assert_refused(client, response, users_before)
    assert "DTD" in response.context["message"]
    assert b"root:" not in response.content


def test_a_signed_answer_with_a_dtd_is_refused(tenant_a: Tenant, alpha_sso):
    """A genuine signed answer with an internal DTD prepended: still refused."""
    client = browser()
    request_id = start_sign_in(client, "alpha")
    root = idp_for("alpha").signed_response(
        sp_for("alpha"), in_response_to=request_id, name_id=ALICE, attributes=alice_attributes()
    )
    xml = '<!DOCTYPE r [<!ENTITY a "b">]>' + etree.tostring(root).decode()
    users_before = User.objects.count()
    response = post_to_acs(client, "alpha", encode(xml))
    assert_refused(client, response, users_before)
    assert "DTD" in response.context["message"]


@pytest.mark.parametrize("kind", list(DTD_DOCUMENTS))
def test_the_library_refusing_a_dtd_is_a_clean_page_too(tenant_a: Tenant, alpha_sso, kind):
    """Behind the screening, python3-saml raises DTDForbidden (a ValueError allauth's
    ACS does not catch) from its parser: the finishing step must still answer 400."""
    from importlib import import_module

    from allauth.core.internal import httpkit
    from django.conf import settings
    from django.test import RequestFactory

    client = browser()
    start_sign_in(client, "alpha")
    stored = RequestFactory().post(
        reverse("saml_acs", args=["alpha"]),
        {"SAMLResponse": encode(DTD_DOCUMENTS[kind])},
        HTTP_HOST="testserver",
    )
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store["request"] = httpkit.serialize_request(stored)
    store.create()
    client.cookies["saml-acs-session"] = store.session_key
    users_before = User.objects.count()
    response = client.get(reverse("saml_finish_acs", args=["alpha"]))
    assert_refused(client, response, users_before)
    assert "could not be read" in response.context["message"]


# --- Replay -------------------------------------------------------------------------


def _copy_session(source) -> object:
    """A second browser whose session holds the same pending sign-in state: the
    strongest replay position (the stash alone would stop a plain one)."""
    from importlib import import_module

    from django.conf import settings

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store.update(dict(source.session.items()))
    store.create()
    other = browser()
    other.cookies[settings.SESSION_COOKIE_NAME] = store.session_key
    return other


def test_a_replayed_assertion_is_refused_in_a_second_browser_session(tenant_a, alpha_sso):
    first = browser()
    request_id = start_sign_in(first, "alpha")
    second = _copy_session(first)
    answer = alice_answer(request_id)
    assert post_to_acs(first, "alpha", answer).status_code == 302
    alice = User.objects.get(email=ALICE)
    assert signed_in_user_id(first) == alice.pk

    replay = post_to_acs(second, "alpha", answer)
    assert replay.status_code == 400
    assert "already used" in replay.context["message"]
    assert signed_in_user_id(second) is None


def test_the_same_answer_twice_in_one_browser_is_refused(tenant_a, alpha_sso):
    client = browser()
    request_id = start_sign_in(client, "alpha")
    answer = alice_answer(request_id)
    assert post_to_acs(client, "alpha", answer).status_code == 302
    client.logout()
    assert 400 <= post_to_acs(client, "alpha", answer).status_code < 500
    assert signed_in_user_id(client) is None


# --- Malformed input: a clean 4xx page, never a 500 ---------------------------------

MALFORMED = {
    "not base64": "!!!% not base64 %!!!",
    "base64 of text": base64.b64encode(b"hello, not xml").decode(),
    "base64 of broken XML": base64.b64encode(b"<samlp:Response><unclosed>").decode(),
    "XML that is not SAML": base64.b64encode(b"<foo>bar</foo>").decode(),
    "deflated (redirect binding) on the POST binding": base64.b64encode(
        zlib.compress(b"<samlp:Response/>")[2:-4]
    ).decode(),
    "empty": "",
    "huge": base64.b64encode(b"<a>" + b"x" * 400_000 + b"</a>").decode(),
    "DOCTYPE only": base64.b64encode(b"<!DOCTYPE html><html></html>").decode(),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_answers_get_a_clean_error_page(tenant_a: Tenant, alpha_sso, case: str):
    client = browser()
    start_sign_in(client, "alpha")
    users_before = User.objects.count()
    response = post_to_acs(client, "alpha", MALFORMED[case])
    assert_refused(client, response, users_before)
    assert b"Single sign-on did not sign you in" in response.content


def test_malformed_requests_to_the_acs_get_4xx(tenant_a: Tenant, alpha_sso):
    client = browser()
    acs = reverse("saml_acs", args=["alpha"])
    assert client.post(acs, {}).status_code == 400  # no SAMLResponse
    assert client.post(acs, {"SAMLResponse": ["a", "b"]}).status_code == 400
    assert client.get(acs).status_code == 405
    assert (
        client.post(reverse("saml_acs", args=["no-such-org"]), {"SAMLResponse": "x"}).status_code
        == 404
    )
    # The finishing step with nothing stored, and without a Host header.
    assert client.get(reverse("saml_finish_acs", args=["alpha"])).status_code == 400
    assert Client().post(reverse("saml_login", args=["alpha"])).status_code == 400
    assert signed_in_user_id(client) is None


def test_an_answer_posted_to_one_organizations_acs_cannot_finish_at_another(
    tenant_a: Tenant, tenant_b: Tenant, alpha_sso
):
    connect(tenant_b.owner, tenant_b.org, idp_for("bravo"))
    client = browser()
    request_id = start_sign_in(client, "alpha")
    acs = client.post(
        reverse("saml_acs", args=["alpha"]), {"SAMLResponse": alice_answer(request_id)}
    )
    assert acs.status_code == 302
    response = client.get(reverse("saml_finish_acs", args=["bravo"]))
    assert response.status_code == 400
    assert signed_in_user_id(client) is None
    assert not User.objects.filter(email=ALICE).exists()


def test_single_logout_is_not_offered_and_signs_nobody_out(tenant_a: Tenant, alpha_sso):
    client = browser()
    client.force_login(tenant_a.member)
    for query in ("?SAMLRequest=garbage", "?SAMLResponse=garbage", ""):
        assert client.get(reverse("saml_sls", args=["alpha"]) + query).status_code == 404
    assert signed_in_user_id(client) == tenant_a.member.pk


# --- Group mapping at every sign-in ------------------------------------------------


def sign_in_as_alice(*groups: str):
    client = browser()
    request_id = start_sign_in(client, "alpha")
    response = post_to_acs(client, "alpha", alice_answer(request_id, *groups))
    return client, response


def test_a_role_change_at_the_idp_applies_at_the_next_sign_in(tenant_a: Tenant, alpha_sso):
    project = tenant_a.project
    services.sso_group_mapping_create(
        connection=alpha_sso,
        actor=tenant_a.owner,
        idp_group="ml-team",
        org_role=OrgRole.MEMBER,
        project=project,
        project_role="writer",
    )
    _, first = sign_in_as_alice("ml-team")
    assert first.status_code == 302
    alice = User.objects.get(email=ALICE)
    membership = Membership.objects.get(organization=tenant_a.org, user=alice)
    assert membership.role == OrgRole.MEMBER
    assert ProjectMembership.objects.get(project=project, user=alice).role == "writer"

    # The IdP adds Alice to the admins group: admin at her next sign-in.
    sign_in_as_alice("ml-team", "raydeck-admins")
    membership.refresh_from_db()
    assert membership.role == OrgRole.ADMIN

    # ... and removes her from both groups: back to the default role, out of the project.
    _, third = sign_in_as_alice()
    assert third.status_code == 302
    membership.refresh_from_db()
    assert membership.role == OrgRole.MEMBER
    assert not ProjectMembership.objects.filter(project=project, user=alice).exists()
    verbs = list(
        AuditEvent.objects.filter(actor=alice, verb__startswith="sso.").values_list(
            "verb", flat=True
        )
    )
    assert verbs.count("sso.member_role_change") == 2
    assert "sso.project_member_add" in verbs
    assert "sso.project_member_remove" in verbs


def test_leaving_the_only_mapped_group_removes_access_when_there_is_no_default_role(
    tenant_a: Tenant, alpha_sso
):
    services.sso_connection_set_access(
        connection=alpha_sso,
        actor=tenant_a.owner,
        enabled=True,
        default_role="",
        enforce_sso=False,
        break_glass_user=None,
        actor_signed_in_through=True,
    )
    # No mapped group, no default role: nobody is created.
    client, response = sign_in_as_alice("everyone")
    assert response.status_code == 403
    assert signed_in_user_id(client) is None
    assert not User.objects.filter(email=ALICE).exists()
    refused = AuditEvent.objects.get(verb="sso.login_refused", organization=tenant_a.org)
    assert refused.actor_email == ALICE

    old_session, _ = sign_in_as_alice("raydeck-admins")
    alice = User.objects.get(email=ALICE)
    assert Membership.objects.get(organization=tenant_a.org, user=alice).role == OrgRole.ADMIN
    token = ApiTokenFactory(organization=tenant_a.org, user=alice)

    client, response = sign_in_as_alice("everyone")
    assert response.status_code == 403
    assert signed_in_user_id(client) is None
    assert not Membership.objects.filter(organization=tenant_a.org, user=alice).exists()
    token.refresh_from_db()
    assert token.revoked_at is not None
    # Her other, older session lost the organization too.
    assert old_session.get(reverse("project_list", args=["alpha"])).status_code == 404
    assert AuditEvent.objects.filter(verb="sso.member_remove", actor=alice).exists()


def test_the_test_connection_changes_no_membership(tenant_a: Tenant, alpha_sso):
    owner = client_for(tenant_a.owner, HTTP_HOST="testserver")
    response = owner.post(reverse("sso_test", args=["alpha"]))
    assert response.status_code == 302
    request_id = authn_request_id(response["Location"])
    result = post_to_acs(owner, "alpha", alice_answer(request_id, "raydeck-admins"))
    assert result.status_code == 200
    assert result.context["preview"].decision.org_role == OrgRole.ADMIN
    assert b"Nobody was signed in" in result.content
    # Still the owner in this browser; nobody new.
    assert signed_in_user_id(owner) == tenant_a.owner.pk
    assert not User.objects.filter(email=ALICE).exists()
    assert not SsoIdentity.objects.exists()
    assert AuditEvent.objects.filter(verb="sso.test", actor=tenant_a.owner).exists()


def test_a_test_answer_cannot_be_finished_by_someone_else(tenant_a: Tenant, alpha_sso):
    """The test state lives in the owner's session: another browser never has it, and a
    member's session holding it (copied) is refused, not shown the preview."""
    owner = client_for(tenant_a.owner, HTTP_HOST="testserver")
    request_id = authn_request_id(owner.post(reverse("sso_test", args=["alpha"]))["Location"])
    member = _copy_session(owner)
    member.force_login(tenant_a.member)
    # force_login starts a new session: put the stashed state back in it.
    session = member.session
    session.update({k: v for k, v in owner.session.items() if k.startswith("socialaccount")})
    session.save()
    response = post_to_acs(member, "alpha", alice_answer(request_id))
    assert response.status_code == 403
    assert not User.objects.filter(email=ALICE).exists()


def test_a_switched_off_connection_signs_nobody_in(tenant_a: Tenant, alpha_sso):
    services.sso_connection_set_access(
        connection=alpha_sso,
        actor=tenant_a.owner,
        enabled=False,
        default_role="member",
        enforce_sso=False,
        break_glass_user=None,
        actor_signed_in_through=True,
    )
    client, response = sign_in_as_alice()
    assert response.status_code == 403
    assert signed_in_user_id(client) is None
    assert not User.objects.filter(email=ALICE).exists()


def test_clock_drift_within_five_minutes_is_tolerated_on_conditions(tenant_a, alpha_sso):
    """The control for the expiry cases: Conditions that ended 200 s ago are still in
    python3-saml's 300 s of drift, so "expired" above means beyond it."""
    client = browser()
    request_id = start_sign_in(client, "alpha")
    answer = _signed_with(not_on_or_after=_ago(200))(idp_for("alpha"), request_id)
    assert post_to_acs(client, "alpha", answer).status_code == 302
    assert signed_in_user_id(client) == User.objects.get(email=ALICE).pk
