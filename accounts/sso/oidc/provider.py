"""What allauth's provider registry loads for OpenID Connect at start: a stand-in that
becomes Raydeck's hardened provider (accounts.sso.oidc_sign_in) when allauth makes one.

allauth's own `openid_connect.provider` module, and with it its OAuth2 views, imports
requests and urllib3: a tenth of a web process's start (benchmarks/README.md "Cold start
to /healthz"), which nothing needs before someone signs in through OIDC. This app stands
in INSTALLED_APPS in its place; its URLs (accounts/sso/oidc/urls.py) are allauth's, with
the views imported by their first request."""

from __future__ import annotations

from typing import Any

from allauth.socialaccount.providers.base import Provider
from django.utils.module_loading import import_string

# allauth's id for the provider: SocialApp.provider of every organization's OIDC app.
OIDC_PROVIDER = "openid_connect"
# Named, not imported: it is above this package (accounts/sso/__init__.py), as the views
# are that URL confs name for kit.lazy_views.LazyView.
HARDENED_PROVIDER = "accounts.sso.oidc_sign_in.RaydeckOidcProvider"


class LazyOidcProvider(Provider):
    """Answers what allauth asks of the provider class (its id, name, URLs' package);
    making one makes the hardened provider, importing it on first use."""

    id = OIDC_PROVIDER
    name = "OpenID Connect"
    package = "accounts.sso.oidc"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Not an instance of cls, so Python does not call __init__ on it again.
        return import_string(HARDENED_PROVIDER)(*args, **kwargs)


provider_classes = [LazyOidcProvider]
