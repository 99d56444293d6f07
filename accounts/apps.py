from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and organizations"

    def ready(self) -> None:
        # allauth's own admin pages would show MFA secrets and let staff edit rows
        # outside our services; support staff use ours instead.
        from allauth.mfa.models import Authenticator
        from django.contrib import admin

        from . import signals  # noqa: F401

        if admin.site.is_registered(Authenticator):
            admin.site.unregister(Authenticator)
