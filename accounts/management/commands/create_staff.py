"""`manage.py create_staff EMAIL`: a support staff account for /admin (README, "Support
staff"). The password comes from stdin or a prompt, never from the command line."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services.users import staff_create


class Command(BaseCommand):
    help = "Create a support staff account for /admin (or make an existing person staff)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )

    def handle(
        self, *args: Any, email: str, name: str, password_stdin: bool, **options: Any
    ) -> None:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        elif sys.stdin.isatty():
            password = getpass.getpass("Password for the new account: ")
        else:
            raise CommandError("Give the password on stdin with --password-stdin.")
        try:
            user, created = staff_create(email=email, password=password, name=name)
        except ValidationError as exc:
            messages = "; ".join(
                f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items()
            )
            raise CommandError(messages) from exc
        if created:
            self.stdout.write(f"Created the staff account {user.email}: sign in at /admin/.")
        else:
            self.stdout.write(f"{user.email} is staff now (their password is unchanged).")
