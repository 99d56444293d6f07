"""SSO URLs: the settings pages (under /o/<org_slug>/), the SAML provider's URLs (in
place of allauth's own, accounts.sso.saml_provider) and the OIDC callback, mounted
under /accounts/ before allauth's URLs so that it answers at allauth's path."""

from django.urls import path

from kit.lazy_views import LazyView

from . import pages, views

org_urlpatterns = [
    path("sso/", views.SsoSettingsView.as_view(), name="sso_settings"),
    path("sso/access/", views.SsoAccessView.as_view(), name="sso_access"),
    path("sso/mappings/new/", views.SsoMappingCreateView.as_view(), name="sso_mapping_create"),
    path(
        "sso/mappings/<int:mapping_id>/delete/",
        views.SsoMappingDeleteView.as_view(),
        name="sso_mapping_delete",
    ),
    path("sso/test/", views.SsoTestView.as_view(), name="sso_test"),
    path("sso/remove/", views.SsoRemoveView.as_view(), name="sso_remove"),
    path("sso/oidc/", pages.OidcSettingsView.as_view(), name="sso_oidc"),
    path("sso/domains/", pages.DomainListView.as_view(), name="sso_domains"),
    path(
        "sso/domains/<int:claim_id>/verify/",
        pages.DomainVerifyView.as_view(),
        name="sso_domain_verify",
    ),
    path(
        "sso/domains/<int:claim_id>/remove/",
        pages.DomainRemoveView.as_view(),
        name="sso_domain_remove",
    ),
]

# "Sign in with SSO", for people not signed in yet.
public_urlpatterns = [
    path("sso/", pages.SsoStartView.as_view(), name="sso_start"),
]

# allauth's SAML URLs (its paths and names), which allauth mounts under /accounts/ from
# here (accounts.sso.saml_provider). Raydeck answers four of them itself (accounts.sso.
# saml says why); allauth serves the metadata. Every view is imported by its first
# request: their modules load python3-saml, lxml and xmlsec (kit/lazy_views.py).
urlpatterns = [
    path(
        "saml/<str:organization_slug>/login/",
        LazyView("accounts.sso.saml.login"),
        name="saml_login",
    ),
    path(
        "saml/<str:organization_slug>/sls/",
        LazyView("accounts.sso.saml.single_logout"),
        name="saml_sls",
    ),
    path("saml/<str:organization_slug>/acs/", LazyView("accounts.sso.saml.acs"), name="saml_acs"),
    path(
        "saml/<str:organization_slug>/acs/finish/",
        LazyView("accounts.sso.saml.finish_acs"),
        name="saml_finish_acs",
    ),
    path(
        "saml/<str:organization_slug>/metadata/",
        LazyView("allauth.socialaccount.providers.saml.views.metadata"),
        name="saml_metadata",
    ),
]

allauth_overrides = [
    # allauth's openid_connect_callback (its login view stays: it calls our provider).
    # Imported by its first request, as allauth's OIDC views are (accounts/sso/oidc/urls.py).
    path(
        "oidc/<str:provider_id>/login/callback/",
        LazyView("accounts.sso.oidc_sign_in.callback"),
        name="raydeck_oidc_callback",
    ),
]
