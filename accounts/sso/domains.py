"""Email domains an organization claims for single sign-on, proven by DNS, and the
"Sign in with SSO" lookup that uses them.

- An owner claims `example.com`; Raydeck shows a TXT record to create at the domain
  itself, holding the claim's `verification_token`.
- "Verify" looks the TXT records up (`txt_records`, the one place that asks DNS) and
  marks the claim verified when the token is there. A domain one organization verified
  cannot be claimed, let alone verified, by another (also a database constraint).
- Only verified claims route "Sign in with SSO" by email (`connection_for_sign_in`)
  and let the organization's IdP sign in to an existing account (accounts.sso.services).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..audit import audit
from ..models import DomainClaim, Organization, SsoConnection, User
from ..permissions import require
from .services import email_domain

if TYPE_CHECKING:
    import dns.resolver

DNS_TIMEOUT_SECONDS = 5.0
MAX_CLAIMS_PER_ORGANIZATION = 50
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

CLAIMED_ELSEWHERE = "Another organization has verified this domain."


class DnsLookupFailed(Exception):
    """DNS gave no answer at all (timeout, server failure): try again later."""


def _resolver() -> dns.resolver.Resolver:
    # dnspython is imported by the verification that asks, not by every web process
    # (56 modules, 2 MB: benchmarks/README.md, "idle memory").
    import dns.resolver

    configured = settings.RAYDECK_DNS_NAMESERVERS
    if not configured:
        return dns.resolver.Resolver()
    resolver = dns.resolver.Resolver(configure=False)
    hosts, ports = [], set()
    for entry in configured:
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        hosts.append(host or entry)
        ports.add(int(port) if port else 53)
    resolver.nameservers = hosts
    resolver.port = ports.pop() if len(ports) == 1 else 53
    return resolver


def txt_records(name: str) -> list[str]:
    """The TXT strings published at `name` (each record's strings joined, as DNS
    splits long values); empty when the name or the record type does not exist."""
    resolver = _resolver()
    import dns.exception  # loaded by _resolver's import

    try:
        answer = resolver.resolve(name, "TXT", lifetime=DNS_TIMEOUT_SECONDS, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise DnsLookupFailed(f"DNS did not answer for {name} ({exc.__class__.__name__}).") from exc
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def normalize_domain(value: str) -> str:
    """`value` as a lowercase ASCII domain name (IDNA for international names), or
    ValidationError."""
    domain = value.strip().lower().removeprefix("@").rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValidationError({"domain": "This is not a valid domain name."}) from None
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(_LABEL.match(lab) for lab in labels):
        raise ValidationError(
            {"domain": "Enter a domain name such as example.com (no @, no https://)."}
        )
    if labels[-1].isdigit():
        raise ValidationError({"domain": "Enter a domain name, not an IP address."})
    return domain


@transaction.atomic(durable=True)
def domain_claim_create(*, organization: Organization, domain: str, actor: User) -> DomainClaim:
    require(actor, "sso.manage", organization)
    domain = normalize_domain(domain)
    claims = DomainClaim.objects.filter(organization=organization)
    if claims.filter(domain=domain).exists():
        raise ValidationError({"domain": "This organization has already claimed this domain."})
    if DomainClaim.objects.verified().filter(domain=domain).exists():
        raise ValidationError({"domain": CLAIMED_ELSEWHERE})
    if claims.count() >= MAX_CLAIMS_PER_ORGANIZATION:
        raise ValidationError(f"An organization can claim at most {MAX_CLAIMS_PER_ORGANIZATION}.")
    claim = DomainClaim(organization=organization, domain=domain, created_by=actor)
    claim.full_clean()
    claim.save()
    audit(actor=actor, verb="sso.domain_claim", target=claim, changes={"domain": [None, domain]})
    return claim


def domain_claim_verify(*, claim: DomainClaim, actor: User) -> bool:
    """Look the TXT record up and mark the claim verified when it holds the token.
    Returns whether the claim is verified now; ValidationError when DNS did not answer
    or another organization verified the domain first. Every check is audited."""
    require(actor, "sso.manage", claim.organization)
    if claim.is_verified:
        return True
    # Outside the transaction: no row lock is held while DNS answers (or does not).
    try:
        found = claim.verification_token in txt_records(claim.domain)
    except DnsLookupFailed as exc:
        raise ValidationError(f"{exc} Check the record and try again in a few minutes.") from exc
    try:
        with transaction.atomic():
            claim = DomainClaim.objects.select_for_update().get(pk=claim.pk)
            if claim.is_verified:
                return True
            now = timezone.now()
            claim.last_checked_at = now
            if found:
                if DomainClaim.objects.verified().filter(domain=claim.domain).exists():
                    raise ValidationError(CLAIMED_ELSEWHERE)
                claim.verified_at = now
            claim.save(update_fields=["last_checked_at", "verified_at"])
            audit(
                actor=actor,
                verb="sso.domain_verify" if found else "sso.domain_verify_failed",
                target=claim,
                changes={"verified": [False, found]},
            )
    except IntegrityError:  # verified elsewhere between the check and the save
        raise ValidationError(CLAIMED_ELSEWHERE) from None
    return found


@transaction.atomic(durable=True)
def domain_claim_remove(*, claim: DomainClaim, actor: User) -> None:
    require(actor, "sso.manage", claim.organization)
    audit(
        actor=actor,
        verb="sso.domain_remove",
        target=claim,
        changes={"domain": [claim.domain, None], "verified": [claim.is_verified, None]},
    )
    claim.delete()


def connection_for_sign_in(query: str) -> SsoConnection | None:
    """The SSO connection "Sign in with SSO" sends `query` to: an email address routes
    by a verified domain claim, anything else is taken as an organization's slug. None
    when nothing matches or the organization's SSO is off (the caller shows one message
    for all of these, so the page tells no more than the redirect itself would)."""
    query = query.strip().lower()
    if not query or len(query) > 254:
        return None
    # Not scoped by visible_to: nobody is signed in yet, and the answer is only ever
    # a redirect to the organization's IdP (which is what the issue asks for).
    if "@" in query:
        claim = (
            DomainClaim.objects.verified()
            .filter(domain=email_domain(query))
            .select_related("organization__sso_connection__social_app")
            .first()
        )
        organization = claim.organization if claim is not None else None
    else:
        organization = (
            Organization.objects.filter(slug=query)
            .select_related("sso_connection__social_app")
            .first()
        )
    if organization is None:
        return None
    try:
        connection = organization.sso_connection
    except SsoConnection.DoesNotExist:
        return None
    return connection if connection.enabled else None
