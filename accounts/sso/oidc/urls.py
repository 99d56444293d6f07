"""allauth's OpenID Connect URLs (its routes and names, mounted under /accounts/ by
accounts/allauth_urls.py), each view imported by its first request: allauth's views
module imports requests and urllib3 (accounts/sso/oidc/provider.py)."""

from allauth.socialaccount import app_settings
from django.urls import URLPattern, URLResolver, include, path, re_path

from kit.lazy_views import LazyView

ALLAUTH_VIEWS = "allauth.socialaccount.providers.openid_connect.views"

urlpatterns: list[URLPattern | URLResolver] = [
    re_path(
        r"^(?P<provider_id>[^/]+)/",
        include(
            [
                path("login/", LazyView(f"{ALLAUTH_VIEWS}.login"), name="openid_connect_login"),
                path(
                    "login/callback/",
                    LazyView(f"{ALLAUTH_VIEWS}.callback"),
                    name="openid_connect_callback",
                ),
            ]
        ),
    )
]

if app_settings.OPENID_CONNECT_URL_PREFIX:
    urlpatterns = [path(f"{app_settings.OPENID_CONNECT_URL_PREFIX}/", include(urlpatterns))]
