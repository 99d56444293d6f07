"""A SAML IdP's settings as allauth's SocialApp holds them: from the IdP's metadata (by
URL or pasted) or by hand; and what the IdP needs from Raydeck (`sp_urls`)."""

from __future__ import annotations

import base64
import binascii
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from django.http import HttpRequest
from django.urls import reverse

from .outbound import public_host

SAML_PROVIDER = "saml"
# What the security block of every organization's SocialApp says (see saml_app_settings).
SAML_ADVANCED_SETTINGS: dict[str, Any] = {
    "strict": True,
    "want_assertion_signed": True,
    "want_message_signed": False,
    "reject_idp_initiated_sso": True,
    "reject_deprecated_algorithm": True,
    "want_name_id": True,
    "want_attribute_statement": False,
    "allow_repeat_attribute_name": True,
    # Self-hosted consoles often live at intranet names without a dot.
    "allow_single_label_domains": True,
}


def saml_app_settings(*, entity_id: str, sso_url: str, x509cert: str, metadata_url: str) -> dict:
    """The SocialApp.settings allauth reads for one organization's IdP. The IdP's
    metadata, when given by URL, is fetched when saved, not at sign-in: allauth would
    fetch it at login time."""
    return {
        "idp": {"entity_id": entity_id, "sso_url": sso_url, "x509cert": x509cert},
        "advanced": dict(SAML_ADVANCED_SETTINGS),
        "raydeck_metadata_url": metadata_url,
    }


def sp_urls(request: HttpRequest, organization_slug: str) -> dict[str, str]:
    """What the IdP needs from Raydeck: metadata URL, entity id (= the metadata URL, as
    allauth builds it) and the ACS URL."""
    metadata = request.build_absolute_uri(reverse("saml_metadata", args=[organization_slug]))
    return {
        "metadata_url": metadata,
        "entity_id": metadata,
        "acs_url": request.build_absolute_uri(reverse("saml_acs", args=[organization_slug])),
    }


MAX_METADATA_BYTES = 1024 * 1024
METADATA_TIMEOUT_SECONDS = 10


class IdpSettingsError(ValueError):
    """The IdP's metadata or settings cannot be used; the message says why."""


def normalize_certificate(text: str) -> str:
    """The IdP's signing certificate as one line of base64 DER, from PEM or base64."""
    from cryptography import x509

    body = "".join(
        line.strip()
        for line in text.strip().splitlines()
        if line.strip() and not line.strip().startswith("-----")
    )
    try:
        der = base64.b64decode(body, validate=True)
        x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        raise IdpSettingsError("This is not an X.509 certificate (PEM or base64).") from None
    return base64.b64encode(der).decode()


def idp_from_metadata(xml: str | bytes, *, metadata_url: str = "") -> dict[str, str]:
    """entity_id, sso_url and x509cert from the IdP's metadata XML (parsed by
    python3-saml's hardened parser: no DTD, no entities, no network)."""
    from onelogin.saml2.constants import OneLogin_Saml2_Constants
    from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser

    if len(xml) > MAX_METADATA_BYTES:
        raise IdpSettingsError("The metadata is larger than 1 MB.")
    try:
        parsed = OneLogin_Saml2_IdPMetadataParser.parse(
            xml, required_sso_binding=OneLogin_Saml2_Constants.BINDING_HTTP_REDIRECT
        ).get("idp", {})
    except Exception:  # hostile or broken XML: any parser failure is a clear refusal
        raise IdpSettingsError("The metadata is not valid SAML IdP metadata XML.") from None
    certs = parsed.get("x509certMulti", {}).get("signing") or [parsed.get("x509cert")]
    entity_id = parsed.get("entityId")
    sso_url = parsed.get("singleSignOnService", {}).get("url")
    if not entity_id or not sso_url or not certs or not certs[0]:
        raise IdpSettingsError(
            "The metadata has no IdP entity id, HTTP-Redirect sign-on URL or signing certificate."
        )
    return {
        "entity_id": entity_id,
        "sso_url": sso_url,
        "x509cert": normalize_certificate(certs[0]),
        "metadata_url": metadata_url,
    }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        raise IdpSettingsError("The metadata URL redirects elsewhere: give the final URL.")


def fetch_idp_metadata(url: str) -> bytes:
    """The IdP's metadata from its URL: HTTPS only, a public address (an owner must not
    make Raydeck read its own network), no redirects, at most 1 MB, 10 seconds."""
    parts = urlparse(url)
    if parts.scheme != "https" or not parts.hostname:
        raise IdpSettingsError("The metadata URL must start with https://.")
    if not public_host(parts.hostname):
        raise IdpSettingsError("The metadata URL's host is not a public internet address.")
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, headers={"Accept": "application/samlmetadata+xml"})  # noqa: S310 (https only, checked above)
    try:
        with opener.open(request, timeout=METADATA_TIMEOUT_SECONDS) as response:
            body = response.read(MAX_METADATA_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise IdpSettingsError(f"The metadata could not be fetched: {exc}.") from None
    if len(body) > MAX_METADATA_BYTES:
        raise IdpSettingsError("The metadata is larger than 1 MB.")
    return body
