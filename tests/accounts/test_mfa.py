"""Two-factor sign-in with an authenticator app (allauth.mfa TOTP), end to end through
the real pages: activate with a code, then sign-in asks for a code."""

from __future__ import annotations

import time

import pytest
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY, format_hotp_value, hotp_value
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent
from tests.conftest import Tenant
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def current_code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def test_totp_activation_then_sign_in_needs_the_code(
    tenant_a: Tenant, django_capture_on_commit_callbacks
) -> None:
    email = tenant_a.member.email
    client = Client()
    client.post("/accounts/login/", {"login": email, "password": PASSWORD})
    # Changing MFA asks for the password again first (re-authentication).
    assert client.get(reverse("mfa_activate_totp"))["Location"].startswith(
        reverse("account_reauthenticate")
    )
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    page = client.get(reverse("mfa_activate_totp"))
    assert page.status_code == 200
    secret = client.session[SECRET_SESSION_KEY]
    wrong = client.post(reverse("mfa_activate_totp"), {"code": "000000"})
    assert wrong.status_code == 200  # the form again, with an error
    # allauth announces the new authenticator after commit; our audit hook runs then.
    with django_capture_on_commit_callbacks(execute=True):
        activated = client.post(reverse("mfa_activate_totp"), {"code": current_code(secret)})
    assert activated.status_code == 302
    assert AuditEvent.objects.filter(verb="user.mfa_add", actor=tenant_a.member).exists()
    client.post("/accounts/logout/")

    fresh = Client()
    step = fresh.post("/accounts/login/", {"login": email, "password": PASSWORD})
    assert step["Location"] == reverse("mfa_authenticate")
    projects = reverse("project_list", args=[tenant_a.org.slug])
    assert fresh.get(projects).status_code == 302  # password alone is not enough
    bad = fresh.post(reverse("mfa_authenticate"), {"code": "123456"})
    assert bad.status_code == 200 and fresh.get(projects).status_code == 302
    # allauth refuses a code twice, so wait for the next 30-second window if needed.
    code = current_code(secret)
    fresh.post(reverse("mfa_authenticate"), {"code": code})
    if fresh.get(projects).status_code != 200:
        time.sleep(30 - time.time() % 30 + 0.5)
        fresh.post(reverse("mfa_authenticate"), {"code": current_code(secret)})
    assert fresh.get(projects).status_code == 200
