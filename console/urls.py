"""Every URL of the control plane. Organization pages live under /o/<org_slug>/."""

from django.contrib import admin
from django.urls import include, path

from accounts.sso.urls import allauth_overrides as sso_allauth_overrides
from accounts.sso.urls import org_urlpatterns as sso_urlpatterns
from accounts.sso.urls import public_urlpatterns as sso_public_urlpatterns
from accounts.urls import org_urlpatterns, user_urlpatterns
from clouds.urls import org_urlpatterns as cloud_urlpatterns
from clusters.urls import org_urlpatterns as cluster_urlpatterns

from . import views

admin.site.site_header = "Raydeck support"
admin.site.site_title = "Raydeck support"
admin.site.index_title = "Find organizations, people and what happened"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("agent/v1/", include("clusters.agent_api")),
    path("api/v1/", include("console.api.urls")),
    # Before allauth's: Raydeck answers the SAML ACS at allauth's paths.
    path("accounts/", include(sso_allauth_overrides)),
    path("accounts/", include("allauth.urls")),
    path("", include(user_urlpatterns)),
    path("", include(sso_public_urlpatterns)),
    path("o/<slug:org_slug>/", include(org_urlpatterns)),
    path("o/<slug:org_slug>/", include(sso_urlpatterns)),
    path("o/<slug:org_slug>/", include(cloud_urlpatterns)),
    path("o/<slug:org_slug>/", include(cluster_urlpatterns)),
]
