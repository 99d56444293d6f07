"""Signing in and staying signed in: session rotation, logout, idle and absolute
expiry, deactivation, rate limits, and the audit trail of sign-ins."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import services
from accounts.models import AuditEvent
from tests.conftest import Tenant
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
SessionStore = import_module(settings.SESSION_ENGINE).SessionStore


def sign_in(client: Client, email: str, password: str = PASSWORD) -> None:
    response = client.post(LOGIN, {"login": email, "password": password})
    assert response.status_code == 302, response.content[:500]


def is_signed_in(client: Client, tenant: Tenant) -> bool:
    response = client.get(reverse("project_list", args=[tenant.org.slug]))
    return response.status_code == 200


def test_sign_in_rotates_the_session_id(tenant_a: Tenant) -> None:
    client = Client()
    anonymous = SessionStore()
    anonymous["seen"] = True
    anonymous.create()
    client.cookies[settings.SESSION_COOKIE_NAME] = anonymous.session_key
    sign_in(client, tenant_a.member.email)
    new_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert new_key != anonymous.session_key
    assert not SessionStore().exists(anonymous.session_key)
    assert is_signed_in(client, tenant_a)


def test_old_cookie_is_dead_after_sign_out(tenant_a: Tenant) -> None:
    client = Client()
    sign_in(client, tenant_a.member.email)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    client.post("/accounts/logout/")
    replay = Client()
    replay.cookies[settings.SESSION_COOKIE_NAME] = cookie
    assert not is_signed_in(replay, tenant_a)


def test_idle_session_expires_after_30_minutes(tenant_a: Tenant, time_machine) -> None:
    time_machine.move_to(timezone.now(), tick=False)
    client = Client()
    sign_in(client, tenant_a.member.email)
    time_machine.shift(timedelta(minutes=29))
    assert is_signed_in(client, tenant_a)  # activity resets the idle clock
    time_machine.shift(timedelta(minutes=29))
    assert is_signed_in(client, tenant_a)
    time_machine.shift(timedelta(minutes=31))
    assert not is_signed_in(client, tenant_a)


def test_session_ends_12_hours_after_sign_in_even_when_active(
    tenant_a: Tenant, time_machine
) -> None:
    time_machine.move_to(timezone.now(), tick=False)
    client = Client()
    sign_in(client, tenant_a.member.email)
    for _ in range(35):  # every 20 minutes for 11h40
        time_machine.shift(timedelta(minutes=20))
        assert is_signed_in(client, tenant_a)
    time_machine.shift(timedelta(minutes=21))
    assert not is_signed_in(client, tenant_a)


def test_deactivated_users_sessions_end(tenant_a: Tenant) -> None:
    client = Client()
    sign_in(client, tenant_a.member.email)
    services.user_deactivate(user=tenant_a.member, actor=UserFactory(is_staff=True))
    assert not is_signed_in(client, tenant_a)
    again = client.post(LOGIN, {"login": tenant_a.member.email, "password": PASSWORD})
    assert again["Location"] == "/accounts/inactive/"
    assert not is_signed_in(client, tenant_a)


def test_sign_in_and_failed_sign_in_are_audited(tenant_a: Tenant) -> None:
    client = Client(REMOTE_ADDR="203.0.113.7", HTTP_USER_AGENT="pytest-browser/1.0")
    client.post(LOGIN, {"login": tenant_a.member.email, "password": "wrong password"})
    failed = AuditEvent.objects.get(verb="user.login_failed")
    assert failed.actor_email == tenant_a.member.email and failed.ip == "203.0.113.7"
    sign_in(client, tenant_a.member.email)
    ok = AuditEvent.objects.get(verb="user.login")
    assert ok.actor == tenant_a.member
    assert ok.user_agent == "pytest-browser/1.0"


def test_repeated_failures_lock_the_account_until_support_unlocks_it(tenant_a: Tenant) -> None:
    email = tenant_a.member.email
    for _ in range(5):
        Client().post(LOGIN, {"login": email, "password": "wrong password"})
    locked = Client().post(LOGIN, {"login": email, "password": PASSWORD})
    assert locked.status_code != 302
    assert b"Too many failed login attempts" in locked.content
    staff = UserFactory(is_staff=True)
    admin = Client()
    admin.force_login(staff)
    admin.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "unlock_sign_in", "_selected_action": [tenant_a.member.pk]},
    )
    assert AuditEvent.objects.filter(verb="user.unlock", actor=staff).exists()
    sign_in(Client(), email)


def test_login_required_everywhere_but_the_public_pages() -> None:
    assert Client().get("/").status_code == 302
    assert Client().get("/healthz").status_code == 200
    assert Client().get(LOGIN).status_code == 200
    assert Client().get("/accounts/signup/").status_code == 200
