"""Services' pages, under /o/<org_slug>/services/ (console/urls.py includes them)."""

from django.urls import path

from . import views

org_urlpatterns = [
    path("services/", views.ServiceListView.as_view(), name="services_list"),
    path("services/deploy/", views.ServiceDeployView.as_view(), name="services_deploy"),
    path("services/<int:service_id>/", views.ServiceDetailView.as_view(), name="services_detail"),
    path(
        "services/<int:service_id>/metrics/",
        views.ServiceMetricsView.as_view(),
        name="services_metrics",
    ),
    path(
        "services/<int:service_id>/traffic/",
        views.ServiceTrafficView.as_view(),
        name="services_traffic",
    ),
    path(
        "services/<int:service_id>/rollback/",
        views.ServiceRollbackView.as_view(),
        name="services_rollback",
    ),
    path(
        "services/<int:service_id>/terminate/",
        views.ServiceTerminateView.as_view(),
        name="services_terminate",
    ),
]
