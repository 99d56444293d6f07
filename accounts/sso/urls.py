"""SSO URLs: the settings pages (under /o/<org_slug>/) and Raydeck's SAML ACS steps,
mounted under /accounts/ before allauth's URLs so they answer at allauth's paths."""

from django.urls import path

from . import oidc_sign_in, pages, saml, views

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

# The same paths as allauth's saml_login, saml_sls, saml_acs and saml_finish_acs (see
# accounts.sso.saml).
allauth_overrides = [
    path("saml/<str:organization_slug>/login/", saml.login, name="raydeck_saml_login"),
    path("saml/<str:organization_slug>/sls/", saml.single_logout, name="raydeck_saml_sls"),
    path("saml/<str:organization_slug>/acs/", saml.acs, name="raydeck_saml_acs"),
    path(
        "saml/<str:organization_slug>/acs/finish/",
        saml.finish_acs,
        name="raydeck_saml_finish_acs",
    ),
    # allauth's openid_connect_callback (its login view stays: it calls our provider).
    path(
        "oidc/<str:provider_id>/login/callback/",
        oidc_sign_in.callback,
        name="raydeck_oidc_callback",
    ),
]
