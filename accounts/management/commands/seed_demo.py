"""Create (once) a demo organization and its owner, and print how to sign in."""

from __future__ import annotations

import secrets
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Organization, User
from accounts.services.organizations import organization_create

DEMO_EMAIL = "owner@demo.raydeck.local"
DEMO_ORG_SLUG = "demo"


class Command(BaseCommand):
    help = "Create the demo organization and owner if missing; print their credentials."

    def handle(self, *args: Any, **options: Any) -> None:
        password_file = settings.VAR_DIR / "demo-owner-password"
        with transaction.atomic():
            user = User.objects.filter(email=DEMO_EMAIL).first()
            if user is None or not password_file.exists():
                password = secrets.token_urlsafe(12)
                if user is None:
                    user = User.objects.create_user(DEMO_EMAIL, password, name="Demo Owner")
                else:
                    user.set_password(password)
                    user.save(update_fields=["password"])
                settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
                password_file.write_text(password)
                password_file.chmod(0o600)
            EmailAddress.objects.update_or_create(
                user=user, email=DEMO_EMAIL, defaults={"verified": True, "primary": True}
            )
            if not Organization.objects.filter(slug=DEMO_ORG_SLUG).exists():
                organization_create(name="Demo", slug=DEMO_ORG_SLUG, actor=user)
        password = password_file.read_text().strip()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo owner: {DEMO_EMAIL}  password: {password}  (organization “{DEMO_ORG_SLUG}”)"
            )
        )
