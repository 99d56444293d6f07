"""Cluster, compute config and image pages, mounted under /o/<org_slug>/ by console/urls.py."""

from django.urls import path

from . import views, views_builds

org_urlpatterns = [
    path("clusters/", views.ClusterListView.as_view(), name="cluster_list"),
    path("clusters/new/", views.ClusterCreateView.as_view(), name="cluster_create"),
    path("clusters/ca/", views.CertificateAuthorityView.as_view(), name="cluster_ca"),
    path("clusters/<int:cluster_id>/", views.ClusterDetailView.as_view(), name="cluster_detail"),
    path(
        "clusters/<int:cluster_id>/terminate/",
        views.ClusterTerminateView.as_view(),
        name="cluster_terminate",
    ),
    path(
        "clusters/<int:cluster_id>/keep-running/",
        views.ClusterKeepRunningView.as_view(),
        name="cluster_keep_running",
    ),
    path(
        "clusters/<int:cluster_id>/restart/",
        views.ClusterRestartView.as_view(),
        name="cluster_restart",
    ),
    path(
        "clusters/<int:cluster_id>/open/<slug:app>/",
        views.ClusterOpenView.as_view(),
        name="cluster_open",
    ),
    path(
        "clusters/<int:cluster_id>/token/",
        views.ClusterTokenView.as_view(),
        name="cluster_token",
    ),
    path(
        "clusters/<int:cluster_id>/metrics-token/",
        views.ClusterMetricsTokenView.as_view(),
        name="cluster_metrics_token",
    ),
    path(
        "clusters/<int:cluster_id>/revoke-access/",
        views.ClusterRevokeAccessView.as_view(),
        name="cluster_revoke_access",
    ),
    path(
        "clusters/<int:cluster_id>/nodes/<int:node_id>/log/",
        views.NodeLogView.as_view(),
        name="cluster_node_log",
    ),
    path(
        "clusters/<int:cluster_id>/nodes/<int:node_id>/log/download/",
        views.NodeLogDownloadView.as_view(),
        name="cluster_node_log_download",
    ),
    path("compute-configs/", views.ComputeConfigListView.as_view(), name="compute_config_list"),
    path(
        "compute-configs/new/",
        views.ComputeConfigCreateView.as_view(),
        name="compute_config_create",
    ),
    path(
        "compute-configs/<int:config_id>/",
        views.ComputeConfigDetailView.as_view(),
        name="compute_config_detail",
    ),
    path(
        "compute-configs/<int:config_id>/edit/",
        views.ComputeConfigEditView.as_view(),
        name="compute_config_edit",
    ),
    path("images/", views.ImageListView.as_view(), name="image_list"),
    path("images/new/", views.ImageCreateView.as_view(), name="image_create"),
    path("images/<int:image_id>/edit/", views.ImageEditView.as_view(), name="image_edit"),
    path("images/<int:image_id>/delete/", views.ImageDeleteView.as_view(), name="image_delete"),
    path("images/builds/", views_builds.ImageBuildListView.as_view(), name="image_build_list"),
    path("images/build/", views_builds.ImageBuildCreateView.as_view(), name="image_build_create"),
    path(
        "images/builds/<int:build_id>/",
        views_builds.ImageBuildDetailView.as_view(),
        name="image_build_detail",
    ),
    path(
        "images/builds/<int:build_id>/cancel/",
        views_builds.ImageBuildCancelView.as_view(),
        name="image_build_cancel",
    ),
]
