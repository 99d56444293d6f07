"""Every URL of the control plane. Organization pages live under /o/<org_slug>/."""

from django.contrib import admin
from django.urls import include, path

from accounts.sso.urls import allauth_overrides as sso_allauth_overrides
from accounts.sso.urls import org_urlpatterns as sso_urlpatterns
from accounts.sso.urls import public_urlpatterns as sso_public_urlpatterns
from accounts.urls import org_urlpatterns, user_urlpatterns
from clouds.urls import org_urlpatterns as cloud_urlpatterns
from clouds.urls import storage_urlpatterns as cloud_storage_urlpatterns
from clusters.urls import org_urlpatterns as cluster_urlpatterns
from workloads.jobs.urls import org_urlpatterns as job_urlpatterns
from workloads.serve.urls import org_urlpatterns as service_urlpatterns
from workloads.workspaces.urls import org_urlpatterns as workspace_urlpatterns
from workloads.workspaces.urls import user_urlpatterns as ssh_key_urlpatterns

from . import metrics, views

admin.site.site_header = "Raydeck support"
admin.site.site_title = "Raydeck support"
admin.site.index_title = "Find organizations, people and what happened"

handler500 = "console.views.server_error"  # an unreachable dependency: 503 (kit/outages.py)

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("agent/v1/", include("clusters.agent_api")),
    path("api/v1/", include("console.api.urls")),
    # Before allauth's: Raydeck answers the OIDC callback at allauth's path (and its SAML
    # paths through allauth's own include: accounts.sso.saml_provider).
    path("accounts/", include(sso_allauth_overrides)),
    path("accounts/", include("accounts.allauth_urls")),  # allauth's, MFA's pages lazy
    path("", include(cloud_storage_urlpatterns)),
    path("", include(user_urlpatterns)),
    path("", include(ssh_key_urlpatterns)),
    path("", include(sso_public_urlpatterns)),
    path("o/<slug:org_slug>/", views.OverviewView.as_view(), name="org_overview"),
    path("o/<slug:org_slug>/", include(org_urlpatterns)),
    path("o/<slug:org_slug>/", include(sso_urlpatterns)),
    path("o/<slug:org_slug>/", include(cloud_urlpatterns)),
    path("o/<slug:org_slug>/", include(cluster_urlpatterns)),
    path("o/<slug:org_slug>/", include(workspace_urlpatterns)),
    path("o/<slug:org_slug>/", include(service_urlpatterns)),
    path("o/<slug:org_slug>/", include(job_urlpatterns)),
]
