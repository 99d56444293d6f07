"""`manage.py create_staff`: the operator makes a support staff account that reaches
/admin, audited; bad input changes nothing."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import AuditEvent, User
from tests.conftest import Tenant


def create_staff(*args: str, password: str) -> str:
    out = io.StringIO()
    stdin = io.StringIO(password + "\n")
    import sys

    real = sys.stdin
    sys.stdin = stdin
    try:
        call_command("create_staff", *args, "--password-stdin", stdout=out)
    finally:
        sys.stdin = real
    return out.getvalue()


def test_a_staff_account_signs_in_to_admin_and_is_audited(db: None) -> None:
    said = create_staff("Help@Example.com", "--name", "Help desk", password="a-long-pass-phrase-9")
    assert "Created the staff account help@example.com" in said
    user = User.objects.get(email="help@example.com")
    assert user.is_staff and not user.is_superuser
    client = Client()
    assert client.login(email="help@example.com", password="a-long-pass-phrase-9")
    assert client.get("/admin/").status_code == 200
    event = AuditEvent.objects.get(verb="user.staff_grant")
    assert event.changes == {"is_staff": [False, True]}


def test_an_existing_person_becomes_staff_and_keeps_their_password(
    db: None, tenant_a: Tenant
) -> None:
    said = create_staff(tenant_a.viewer.email, password="ignored")
    assert "is staff now" in said
    tenant_a.viewer.refresh_from_db()
    assert tenant_a.viewer.is_staff
    assert not tenant_a.viewer.check_password("ignored")


def test_bad_input_names_the_field_and_creates_nothing(db: None) -> None:
    with pytest.raises(CommandError, match="email"):
        create_staff("not-an-email", password="a-long-pass-phrase-9")
    with pytest.raises(CommandError, match="password"):
        create_staff("help@example.com", password="123")
    assert not User.objects.filter(is_staff=True).exists()
    assert not AuditEvent.objects.filter(verb="user.staff_grant").exists()
