"""Cloud pages, mounted under /o/<org_slug>/ by console/urls.py."""

from django.urls import path

from . import storage_views, views

# Mounted at the root: the local cloud's storage, reached by signed URLs (no session).
storage_urlpatterns = [
    path(
        "storage/local/<uuid:cloud_uuid>/<path:key>",
        storage_views.local_object,
        name="local_storage_object",
    ),
]

org_urlpatterns = [
    path("settings/default-cloud/", views.DefaultCloudView.as_view(), name="org_default_cloud"),
    path(
        "projects/<slug:project_slug>/default-cloud/",
        views.ProjectDefaultCloudView.as_view(),
        name="project_default_cloud",
    ),
    path("clouds/", views.CloudListView.as_view(), name="cloud_list"),
    path("clouds/new/", views.CloudAddView.as_view(), name="cloud_add"),
    path("clouds/new/<str:kind>/", views.CloudCreateView.as_view(), name="cloud_create"),
    path("clouds/<int:cloud_id>/", views.CloudDetailView.as_view(), name="cloud_detail"),
    path("clouds/<int:cloud_id>/setup/", views.CloudSetupView.as_view(), name="cloud_setup"),
    path("clouds/<int:cloud_id>/edit/", views.CloudEditView.as_view(), name="cloud_edit"),
    path("clouds/<int:cloud_id>/verify/", views.CloudVerifyView.as_view(), name="cloud_verify"),
    path("clouds/<int:cloud_id>/delete/", views.CloudDeleteView.as_view(), name="cloud_delete"),
    path(
        "clouds/<int:cloud_id>/instances/",
        views.CloudInstancesView.as_view(),
        name="cloud_instances",
    ),
]
