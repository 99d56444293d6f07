"""allauth's URLs under /accounts/: the routes and names `include("allauth.urls")` gives
with Raydeck's settings, except that MFA's own pages (`allauth.mfa.base.views`) are
imported by their first request. That module imports allauth's WebAuthn flows and fido2
(2% of a web process's start, benchmarks/README.md "Cold start to /healthz"), which
nothing needs before someone signs in with MFA: WebAuthn is off (MFA_SUPPORTED_TYPES).

tests/accounts/test_allauth_urls.py checks every route, name and view against allauth's
own, so an allauth upgrade that changes them fails there, not in a user's browser."""

from collections.abc import Callable

from allauth.socialaccount.providers.openid_connect import urls as oidc_urls
from django.http import HttpResponseBase
from django.urls import URLPattern, URLResolver, include, path
from django.views.generic.base import RedirectView

from kit.lazy_views import LazyView

from .sso import urls as sso_urls

MFA_VIEWS = "allauth.mfa.base.views"

mfa_urlpatterns: list[URLPattern | URLResolver] = [
    path("", LazyView(f"{MFA_VIEWS}.index"), name="mfa_index"),
    path("authenticate/", LazyView(f"{MFA_VIEWS}.authenticate"), name="mfa_authenticate"),
    path("reauthenticate/", LazyView(f"{MFA_VIEWS}.reauthenticate"), name="mfa_reauthenticate"),
    path("totp/", include("allauth.mfa.totp.urls")),
    path("recovery-codes/", include("allauth.mfa.recovery_codes.urls")),
]


def _moved(pattern_name: str) -> Callable[..., HttpResponseBase]:
    """allauth's old social/ paths, which it still redirects."""
    return RedirectView.as_view(pattern_name=pattern_name, permanent=True)


urlpatterns: list[URLPattern | URLResolver] = [
    path("", include("allauth.account.urls")),
    path("2fa/", include(mfa_urlpatterns)),
    path("3rdparty/", include("allauth.socialaccount.urls")),
    path("social/login/cancelled/", _moved("socialaccount_login_cancelled")),
    path("social/login/error/", _moved("socialaccount_login_error")),
    path("social/signup/", _moved("socialaccount_signup")),
    path("social/connections/", _moved("socialaccount_connections")),
    # The sign-in providers' own paths: SAML's (accounts.sso.saml_provider), then
    # OpenID Connect's, last because its paths would match the others'.
    *sso_urls.urlpatterns,
    *oidc_urls.urlpatterns,
]
