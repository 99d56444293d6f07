"""The IdP's discovery document and JWKS come from the shared cache: a second sign-in
asks the IdP for neither, a rotated key is picked up by fetching the JWKS once more,
and made-up kids cannot make Raydeck fetch it more than once a minute per connection.
Against the fake IdP (tests/accounts/oidc_idp.py), like test_sso_oidc.py."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.urls import reverse

from accounts.models import SsoConnection, User
from accounts.sso.oidc import client as oidc_client
from accounts.sso.oidc import documents as idp_documents
from tests.conftest import Tenant, client_for

from .oidc_idp import FakeOidcIdp, Person, new_key
from .sso_helpers import browser, signed_in_user_id
from .test_sso_oidc import ALICE, assert_refused, connect_oidc, sign_in

pytestmark = pytest.mark.django_db

DISCOVERY = "/.well-known/openid-configuration"


@pytest.fixture
def alpha(tenant_a: Tenant, oidc_idps: Any) -> tuple[FakeOidcIdp, SsoConnection]:
    idp = oidc_idps(person=ALICE)
    connection = connect_oidc(tenant_a.owner, tenant_a.org, idp)
    idp.get_paths.clear()  # saving the connection read discovery (uncached, on purpose)
    return idp, connection


def fetches(idp: FakeOidcIdp, path: str) -> int:
    return idp.get_paths.count(path)


def test_a_second_sign_in_reads_neither_discovery_nor_the_jwks_again(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    idp, connection = alpha
    client = browser()
    assert sign_in(client, connection).status_code == 302
    assert (fetches(idp, DISCOVERY), fetches(idp, "/jwks")) == (1, 1)

    idp.person = Person("bob-sub", "bob@alpha-corp.test", "Bob", [])
    bob = browser()
    assert sign_in(bob, connection).status_code == 302

    assert (fetches(idp, DISCOVERY), fetches(idp, "/jwks")) == (1, 1)
    assert signed_in_user_id(bob) == User.objects.get(email="bob@alpha-corp.test").pk


def test_a_rotated_key_is_picked_up_by_fetching_the_jwks_once_more(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    idp, connection = alpha
    assert sign_in(browser(), connection).status_code == 302
    assert fetches(idp, "/jwks") == 1

    # The IdP rotates: a new key under a new kid, and the old one is no longer published.
    idp.key, idp.kid = new_key(), "idp-key-2"
    client = browser()
    assert sign_in(client, connection).status_code == 302

    assert fetches(idp, "/jwks") == 2
    assert signed_in_user_id(client) == User.objects.get(email=ALICE.email).pk
    # The new JWKS is the cached one now.
    assert sign_in(browser(), connection).status_code == 302
    assert fetches(idp, "/jwks") == 2


def test_bogus_kids_refetch_the_jwks_at_most_once_a_minute(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    idp, connection = alpha
    assert sign_in(browser(), connection).status_code == 302  # caches the JWKS
    assert fetches(idp, "/jwks") == 1

    for n in range(5):
        idp.id_token_header = {"kid": f"made-up-{n}"}
        assert refused_for_kid(sign_in(browser(), connection))

    assert fetches(idp, "/jwks") == 2  # one refetch for five bogus kids

    # A minute later the next unknown kid may fetch once more (and only once).
    expire_refetch_window(connection, idp)
    for n in range(3):
        idp.id_token_header = {"kid": f"later-{n}"}
        assert refused_for_kid(sign_in(browser(), connection))
    assert fetches(idp, "/jwks") == 3


def refused_for_kid(response: Any) -> bool:
    return response.status_code == 400 and b"does not publish" in response.content


def expire_refetch_window(connection: SsoConnection, idp: FakeOidcIdp) -> None:
    """End the minute-long window as its expiry would (the shared cache may be Redis,
    whose clock no test can move)."""
    jwks_uri = idp.discovery()["jwks_uri"]
    window = idp_documents.cache_key("jwks-refetch", connection.social_app_id, jwks_uri)
    assert cache.get(window) is not None
    cache.delete(window)


def test_the_refetch_window_is_a_minute() -> None:
    assert oidc_client.JWKS_REFETCH_INTERVAL_SECONDS == 60
    assert idp_documents.JWKS_CACHE_SECONDS == 600
    assert idp_documents.DISCOVERY_CACHE_SECONDS == 3600


def test_a_sign_in_with_an_empty_cache_fetches_the_jwks_only_once(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    """A fresh fetch that lacks the kid is not followed by a refetch in the same
    sign-in."""
    idp, connection = alpha
    idp.id_token_header = {"kid": "not-published"}
    client = browser()

    assert_refused(sign_in(client, connection), client, ALICE.email, "does not publish")

    assert fetches(idp, "/jwks") == 1


def test_bogus_kids_for_one_connection_leave_anothers_refetch_alone(
    tenant_a: Tenant, tenant_b: Tenant, alpha: tuple[FakeOidcIdp, SsoConnection], oidc_idps: Any
) -> None:
    alpha_idp, alpha_connection = alpha
    bravo_idp = oidc_idps(person=Person("bravo-sub", "b@bravo-corp.test"))
    bravo_connection = connect_oidc(tenant_b.owner, tenant_b.org, bravo_idp)
    assert sign_in(browser(), alpha_connection).status_code == 302
    assert sign_in(browser(), bravo_connection).status_code == 302
    alpha_idp.id_token_header = {"kid": "made-up"}
    assert refused_for_kid(sign_in(browser(), alpha_connection))
    assert fetches(alpha_idp, "/jwks") == 2

    # Bravo rotates its key within the same minute: its own refetch is still allowed.
    bravo_idp.key, bravo_idp.kid = new_key(), "bravo-key-2"
    bravo_idp.get_paths.clear()
    assert sign_in(browser(), bravo_connection).status_code == 302
    assert fetches(bravo_idp, "/jwks") == 1


def test_an_unreachable_idp_is_still_a_clear_error_when_nothing_is_cached(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    idp, connection = alpha
    idp.stop()
    url = reverse("openid_connect_login", kwargs={"provider_id": connection.social_app.provider_id})

    response = browser().post(url, {"process": "login"})

    assert response.status_code == 502
    assert b"could not reach the identity provider" in response.content


def test_an_unreachable_jwks_is_not_cached_as_an_answer(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    idp, connection = alpha
    idp.jwks_status = 503
    client = browser()
    assert_refused(sign_in(client, connection), client, ALICE.email, "answered with HTTP 503")

    idp.jwks_status = 200
    assert sign_in(browser(), connection).status_code == 302
    assert fetches(idp, "/jwks") == 2


def test_saving_the_idp_again_reads_its_documents_afresh(
    tenant_a: Tenant,
    alpha: tuple[FakeOidcIdp, SsoConnection],
    django_capture_on_commit_callbacks: Any,
) -> None:
    idp, connection = alpha
    assert sign_in(browser(), connection).status_code == 302
    owner = client_for(tenant_a.owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post(
            reverse("sso_oidc", args=["alpha"]),
            {
                "issuer": idp.issuer,
                "client_id": idp.client_id,
                "client_secret": "",
                "groups_attribute": "groups",
            },
        )
    assert response.status_code == 302
    idp.get_paths.clear()

    assert sign_in(browser(), connection).status_code == 302
    assert (fetches(idp, DISCOVERY), fetches(idp, "/jwks")) == (1, 1)
