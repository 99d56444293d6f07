"""Cloud pages, mounted under /o/<org_slug>/ by console/urls.py."""

from django.urls import path

from . import views

org_urlpatterns = [
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
