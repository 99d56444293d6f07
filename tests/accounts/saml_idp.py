"""A SAML identity provider that lives only in the tests (the stand-in for a company's
IdP on the internet): a throwaway RSA key and self-signed certificate made with
`cryptography`, responses built with lxml and signed with xmlsec (enveloped,
exclusive c14n, RSA-SHA256), the way real IdPs sign them. Tests mutate the XML before
or after signing to produce each attack."""

from __future__ import annotations

import base64
import copy
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from urllib.parse import parse_qs, urlparse

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
NS = {"samlp": SAMLP, "saml": SAML, "ds": DS}
EMAIL_FORMAT = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
PERSISTENT_FORMAT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


@dataclass(frozen=True)
class SigningKey:
    key_pem: bytes
    cert_pem: bytes

    @property
    def cert_b64(self) -> str:
        return "".join(
            line for line in self.cert_pem.decode().splitlines() if not line.startswith("-----")
        )


@cache
def signing_key(name: str) -> SigningKey:
    """A fresh key and self-signed certificate per name (cached for the test session)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test IdP")])
    now = datetime.now(tz=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return SigningKey(
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
    )


def _t(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id() -> str:
    return "_" + uuid.uuid4().hex


def authn_request_id(location: str) -> str:
    """The ID of the AuthnRequest in an HTTP-Redirect binding URL."""
    encoded = parse_qs(urlparse(location).query)["SAMLRequest"][0]
    xml = zlib.decompress(base64.b64decode(encoded), -15)
    return etree.fromstring(xml).get("ID")


@dataclass
class Sp:
    """What the IdP knows about Raydeck for one organization."""

    acs_url: str
    entity_id: str


@dataclass
class FakeIdp:
    entity_id: str
    key: SigningKey = field(default_factory=lambda: signing_key("default"))

    @property
    def sso_url(self) -> str:
        return self.entity_id.rstrip("/") + "/sso"

    def metadata(self) -> str:
        return f"""<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{self.entity_id}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="{DS}"><ds:X509Data>
      <ds:X509Certificate>{self.key.cert_b64}</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
      Location="{self.sso_url}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"""

    def response(
        self,
        sp: Sp,
        *,
        in_response_to: str | None,
        name_id: str,
        attributes: dict[str, list[str]] | None = None,
        name_id_format: str = EMAIL_FORMAT,
        now: datetime | None = None,
        not_before: datetime | None = None,
        not_on_or_after: datetime | None = None,
        scd_not_on_or_after: datetime | None = None,
        audience: str | None = None,
        recipient: str | None = None,
        destination: str | None = None,
        issuer: str | None = None,
    ) -> etree._Element:
        """An unsigned Response with one Assertion, valid for `sp` unless told otherwise."""
        now = now or datetime.now(tz=UTC)
        issuer = issuer or self.entity_id
        root = etree.Element(f"{{{SAMLP}}}Response", nsmap={"samlp": SAMLP, "saml": SAML})
        root.set("ID", _id())
        root.set("Version", "2.0")
        root.set("IssueInstant", _t(now))
        root.set("Destination", destination or sp.acs_url)
        if in_response_to:
            root.set("InResponseTo", in_response_to)
        etree.SubElement(root, f"{{{SAML}}}Issuer").text = issuer
        status = etree.SubElement(root, f"{{{SAMLP}}}Status")
        etree.SubElement(status, f"{{{SAMLP}}}StatusCode").set(
            "Value", "urn:oasis:names:tc:SAML:2.0:status:Success"
        )
        assertion = etree.SubElement(root, f"{{{SAML}}}Assertion")
        assertion.set("ID", _id())
        assertion.set("Version", "2.0")
        assertion.set("IssueInstant", _t(now))
        etree.SubElement(assertion, f"{{{SAML}}}Issuer").text = issuer
        subject = etree.SubElement(assertion, f"{{{SAML}}}Subject")
        name_id_el = etree.SubElement(subject, f"{{{SAML}}}NameID")
        name_id_el.set("Format", name_id_format)
        name_id_el.text = name_id
        confirmation = etree.SubElement(subject, f"{{{SAML}}}SubjectConfirmation")
        confirmation.set("Method", "urn:oasis:names:tc:SAML:2.0:cm:bearer")
        data = etree.SubElement(confirmation, f"{{{SAML}}}SubjectConfirmationData")
        data.set("NotOnOrAfter", _t(scd_not_on_or_after or now + timedelta(minutes=5)))
        data.set("Recipient", recipient or sp.acs_url)
        if in_response_to:
            data.set("InResponseTo", in_response_to)
        conditions = etree.SubElement(assertion, f"{{{SAML}}}Conditions")
        conditions.set("NotBefore", _t(not_before or now - timedelta(seconds=30)))
        conditions.set("NotOnOrAfter", _t(not_on_or_after or now + timedelta(minutes=5)))
        restriction = etree.SubElement(conditions, f"{{{SAML}}}AudienceRestriction")
        etree.SubElement(restriction, f"{{{SAML}}}Audience").text = audience or sp.entity_id
        authn = etree.SubElement(assertion, f"{{{SAML}}}AuthnStatement")
        authn.set("AuthnInstant", _t(now))
        authn.set("SessionIndex", _id())
        context = etree.SubElement(authn, f"{{{SAML}}}AuthnContext")
        etree.SubElement(
            context, f"{{{SAML}}}AuthnContextClassRef"
        ).text = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
        if attributes:
            statement = etree.SubElement(assertion, f"{{{SAML}}}AttributeStatement")
            for name, values in attributes.items():
                attribute = etree.SubElement(statement, f"{{{SAML}}}Attribute")
                attribute.set("Name", name)
                for value in values:
                    etree.SubElement(attribute, f"{{{SAML}}}AttributeValue").text = value
        return root

    def sign(self, element: etree._Element, key: SigningKey | None = None) -> etree._Element:
        """Sign `element` (a Response or an Assertion) in place, like an IdP does."""
        key = key or self.key
        signature = xmlsec.template.create(
            element, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformRsaSha256
        )
        element.find(f"{{{SAML}}}Issuer").addnext(signature)
        reference = xmlsec.template.add_reference(
            signature, xmlsec.constants.TransformSha256, uri="#" + element.get("ID")
        )
        xmlsec.template.add_transform(reference, xmlsec.constants.TransformEnveloped)
        xmlsec.template.add_transform(reference, xmlsec.constants.TransformExclC14N)
        key_info = xmlsec.template.ensure_key_info(signature)
        xmlsec.template.add_x509_data(key_info)
        context = xmlsec.SignatureContext()
        signing = xmlsec.Key.from_memory(key.key_pem, xmlsec.constants.KeyDataFormatPem)
        signing.load_cert_from_memory(key.cert_pem, xmlsec.constants.KeyDataFormatPem)
        context.key = signing
        context.register_id(element, "ID")
        context.sign(signature)
        return element

    def signed_response(self, sp: Sp, **kwargs: object) -> etree._Element:
        """Assertion signed, then the whole Response signed (what most IdPs send)."""
        root = self.response(sp, **kwargs)  # type: ignore[arg-type]
        self.sign(assertion_of(root))
        self.sign(root)
        return root


def assertion_of(root: etree._Element) -> etree._Element:
    return root.find(f"{{{SAML}}}Assertion")


def encode(root: etree._Element | bytes | str) -> str:
    if isinstance(root, etree._Element):
        root = etree.tostring(root)
    if isinstance(root, str):
        root = root.encode()
    return base64.b64encode(root).decode()


def clone(element: etree._Element) -> etree._Element:
    return copy.deepcopy(element)
