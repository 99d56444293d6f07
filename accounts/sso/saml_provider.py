"""allauth's SAML provider, with its URLs taken from accounts/sso/urls.py."""

from __future__ import annotations

from allauth.socialaccount.providers.saml.provider import SAMLProvider


class RaydeckSamlProvider(SAMLProvider):
    # allauth mounts `<package>.urls`' urlpatterns under /accounts/. Its own SAML module
    # imports the views, hence python3-saml, lxml and xmlsec, into every web process at
    # start; Raydeck's has the same paths and names with views imported on first use.
    package = "accounts.sso"
