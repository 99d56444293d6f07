"""SAML sign-in through allauth's SAML provider (python3-saml), hardened.

allauth serves the AuthnRequest (`saml_login`, behind a Host check) and the SP
metadata. Raydeck answers the two ACS steps itself, at allauth's own paths (allauth
mounts Raydeck's SAML URLs, accounts/sso/urls.py), because allauth's versions let some
cases through (and turns allauth's single-logout endpoint off, see `single_logout`):

- `acs` (the IdP's cross-site POST, without the session cookie) screens the raw
  SAMLResponse before anything is stored: size, base64, well-formed XML, no DOCTYPE or
  entities, no comments or processing instructions (which canonicalisation ignores, so
  they can split a signed NameID); then allauth stores it and redirects to `finish`.
- `finish` (same browser, with its session) verifies with python3-saml in strict mode
  with signed assertions required, maps every library error (including the parser's
  DTDForbidden, a ValueError allauth does not catch) to a clean error page, requires an
  InResponseTo that this browser's session stashed (so IdP-initiated and foreign
  responses fail), refuses a replayed assertion ID until its expiry plus clock drift,
  checks the SocialApp -> SsoConnection -> organization binding, and hands the person
  to accounts.sso.flow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from allauth.core.internal import httpkit
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.saml.utils import build_auth
from allauth.socialaccount.providers.saml.views import acs as allauth_acs
from allauth.socialaccount.providers.saml.views import login as allauth_login
from allauth.socialaccount.sessions import LoginSession
from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from lxml import etree

from ..models import SsoConnection
from .flow import finish_sso_sign_in, sso_error
from .idp_redirects import allow_form_posts_to_idp
from .saml_idp import (
    SAML_PROVIDER,
)
from .services import IdpClaims, SsoRefused, connection_for_app

logger = logging.getLogger(__name__)

# A real SAMLResponse is a few kilobytes (tens with many groups); anything far larger
# is refused before it is decoded or stored.
MAX_SAML_RESPONSE_BYTES = 256 * 1024
# python3-saml allows this much drift on Conditions; the replay cache keeps an ID at
# least this long past the assertion's own expiry.
CLOCK_DRIFT_SECONDS = 300
# When an assertion carries no NotOnOrAfter of its own.
REPLAY_FALLBACK_SECONDS = 24 * 60 * 60

DEFAULT_EMAIL_ATTRIBUTES = (
    "email",
    "mail",
    "emailAddress",
    "urn:oid:0.9.2342.19200300.100.1.3",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
)
DEFAULT_NAME_ATTRIBUTES = (
    "displayName",
    "name",
    "urn:oid:2.16.840.1.113730.3.1.241",
    "http://schemas.microsoft.com/identity/claims/displayname",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
)
EMAIL_NAMEID_FORMAT = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"

# One strict parser for the screening step: no entities, no network, no huge trees,
# and comments kept (so they can be seen and refused).
_SCREEN_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    huge_tree=False,
    remove_comments=False,
    remove_pis=False,
)


class MalformedResponse(Exception):
    """The POSTed SAMLResponse is not something to verify at all."""


def screen_saml_response(encoded: str) -> bytes:
    """The decoded XML of a POSTed SAMLResponse, or MalformedResponse."""
    if len(encoded) > MAX_SAML_RESPONSE_BYTES:
        raise MalformedResponse("The identity provider's answer is too large.")
    try:
        # IdPs may wrap the base64 in lines; anything else outside the alphabet is refused.
        xml = base64.b64decode("".join(encoded.split()).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise MalformedResponse("The identity provider's answer is not valid base64.") from None
    if b"<!DOCTYPE" in xml.upper() or b"<!ENTITY" in xml.upper():
        raise MalformedResponse("The identity provider's answer contains a DTD.")
    try:
        root = etree.fromstring(xml, parser=_SCREEN_PARSER)
    except (etree.XMLSyntaxError, ValueError):
        raise MalformedResponse("The identity provider's answer is not XML.") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MalformedResponse("The identity provider's answer contains a DTD.")
    if root.xpath("//comment() | //processing-instruction()"):
        raise MalformedResponse("The identity provider's answer contains XML comments.")
    return xml


def _saml_app(organization_slug: str) -> SocialApp | None:
    return SocialApp.objects.filter(provider=SAML_PROVIDER, client_id=organization_slug).first()


def _has_host(request: HttpRequest) -> bool:
    # python3-saml builds URLs from the Host header; allauth reads it without a default.
    return bool(request.META.get("HTTP_HOST"))


@login_not_required
def login(request: HttpRequest, organization_slug: str) -> HttpResponse:
    """allauth's start of a SAML sign-in (a confirmation page, then the redirect to the
    IdP), minus its 500 on a request without Host."""
    if not _has_host(request):
        return sso_error(request, "The request has no Host header.", 400)
    response = allauth_login(request, organization_slug=organization_slug)
    app = _saml_app(organization_slug)
    connection = SsoConnection.objects.for_social_app(app).first() if app else None
    if connection is not None:
        allow_form_posts_to_idp(response, connection)
    return response


@csrf_exempt
@login_not_required
def single_logout(request: HttpRequest, organization_slug: str) -> HttpResponse:
    """Raydeck takes no part in SAML single logout (allauth's endpoint would sign a
    browser out on an IdP's unsigned request, and answers malformed ones with a 500):
    signing out of Raydeck is its own button, and sessions end on their own."""
    return sso_error(request, "Raydeck does not take part in SAML single logout.", 404)


@csrf_exempt  # the IdP posts it cross-site; the InResponseTo state binds it (finish)
@login_not_required
@never_cache
@require_POST
def acs(request: HttpRequest, organization_slug: str) -> HttpResponse:
    if _saml_app(organization_slug) is None:
        return sso_error(request, "Single sign-on is not set up for this organization.", 404)
    if not _has_host(request):
        return sso_error(request, "The request has no Host header.", 400)
    if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_SAML_RESPONSE_BYTES + 4096:
        return sso_error(request, "The identity provider's answer is too large.", 413)
    responses = request.POST.getlist("SAMLResponse")
    if len(responses) != 1:
        return sso_error(request, "The identity provider sent no single SAML response.", 400)
    try:
        screen_saml_response(responses[0])
    except MalformedResponse as exc:
        logger.warning("SAML ACS for %s refused: %s", organization_slug, exc)
        return sso_error(request, str(exc), 400)
    return allauth_acs(request, organization_slug=organization_slug)


@login_not_required
@never_cache
@require_GET
def finish_acs(request: HttpRequest, organization_slug: str) -> HttpResponse:
    app = _saml_app(organization_slug)
    if app is None:
        return sso_error(request, "Single sign-on is not set up for this organization.", 404)
    acs_session = LoginSession(request, "saml_acs_session", "saml-acs-session")
    stored = acs_session.store.get("request")
    acs_session.delete()
    if not stored:
        return sso_error(
            request, "This sign-in answer was already used or has expired. Sign in again.", 400
        )
    try:
        connection = connection_for_app(app, organization_slug=organization_slug)
    except SsoRefused as exc:
        return sso_error(request, str(exc), 403)
    provider = app.get_provider(request)
    acs_request = httpkit.deserialize_request(stored, HttpRequest())
    if acs_request.path != reverse("saml_acs", args=[organization_slug]):
        return sso_error(request, "This answer was sent to another organization.", 400)
    try:
        auth = build_auth(acs_request, provider)
        # InResponseTo is checked below against this browser's stashed state.
        auth.process_response(request_id=None)
    except Exception as exc:  # hostile input: any parser or library failure is a refusal
        logger.warning("SAML response for %s failed to process: %r", organization_slug, exc)
        return sso_error(request, "The identity provider's answer could not be read.", 400)
    if auth.get_errors() or not auth.is_authenticated():
        reason = auth.get_last_error_reason() or "not authenticated"
        logger.warning("SAML response for %s refused: %s", organization_slug, reason)
        return sso_error(
            request, "The identity provider's answer was not accepted.", 400, detail=reason
        )
    in_response_to = auth.get_last_response_in_response_to()
    if not in_response_to:
        return sso_error(
            request,
            "Sign-ins started at the identity provider are not accepted. "
            "Start from Raydeck's sign-in page.",
            400,
        )
    try:
        state = provider.unstash_redirect_state(request, in_response_to)
    except PermissionDenied:
        return sso_error(
            request,
            "This sign-in was not started in this browser, or took too long. Sign in again.",
            400,
        )
    if not _first_use_of_assertion(connection.pk, auth):
        return sso_error(request, "This sign-in answer was already used. Sign in again.", 400)
    try:
        claims = claims_from_saml(connection, auth)
    except SsoRefused as exc:
        return sso_error(request, str(exc), 403)
    return finish_sso_sign_in(request, connection=connection, claims=claims, state=state)


def _first_use_of_assertion(connection_id: int, auth: Any) -> bool:
    """Record the assertion ID until it can no longer be valid; False if it was seen."""
    assertion_id = auth.get_last_assertion_id()
    if not assertion_id:
        return False
    not_on_or_after = auth.get_last_assertion_not_on_or_after()
    now = datetime.now(tz=UTC).timestamp()
    if not_on_or_after:
        ttl = max(int(not_on_or_after - now), 0) + CLOCK_DRIFT_SECONDS
    else:
        ttl = REPLAY_FALLBACK_SECONDS
    digest = hashlib.sha256(assertion_id.encode()).hexdigest()
    return cache.add(f"raydeck:saml:assertion:{connection_id}:{digest}", 1, timeout=ttl)


def _first_value(attributes: dict[str, list], names: tuple[str, ...]) -> Any:
    for name in names:
        values = attributes.get(name)
        if values:
            return values[0]
    return None


def claims_from_saml(connection: Any, auth: Any) -> IdpClaims:
    attributes: dict[str, list] = auth.get_attributes() or {}
    name_id = auth.get_nameid()
    email_names = (
        (connection.email_attribute,) if connection.email_attribute else DEFAULT_EMAIL_ATTRIBUTES
    )
    email = _first_value(attributes, email_names)
    if not email and auth.get_nameid_format() == EMAIL_NAMEID_FORMAT:
        email = name_id
    name_names = (
        (connection.name_attribute,) if connection.name_attribute else DEFAULT_NAME_ATTRIBUTES
    )
    groups = attributes.get(connection.groups_attribute, []) if connection.groups_attribute else []
    return IdpClaims.clean(
        subject=name_id, email=email, name=_first_value(attributes, name_names) or "", groups=groups
    )
