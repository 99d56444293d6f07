"""Workspace pages, mounted under /o/<org_slug>/ by console/urls.py."""

from django.urls import path

from . import views

org_urlpatterns = [
    path("workspaces/", views.WorkspaceListView.as_view(), name="workspace_list"),
    path("workspaces/new/", views.WorkspaceCreateView.as_view(), name="workspace_create"),
    path(
        "workspaces/<int:workspace_id>/",
        views.WorkspaceDetailView.as_view(),
        name="workspace_detail",
    ),
    path(
        "workspaces/<int:workspace_id>/settings/",
        views.WorkspaceSettingsView.as_view(),
        name="workspace_settings",
    ),
    path(
        "workspaces/<int:workspace_id>/start/",
        views.WorkspaceStartView.as_view(),
        name="workspace_start",
    ),
    path(
        "workspaces/<int:workspace_id>/stop/",
        views.WorkspaceStopView.as_view(),
        name="workspace_stop",
    ),
    path(
        "workspaces/<int:workspace_id>/delete/",
        views.WorkspaceDeleteView.as_view(),
        name="workspace_delete",
    ),
    path(
        "workspaces/<int:workspace_id>/job/",
        views.WorkspaceJobView.as_view(),
        name="workspace_job",
    ),
    path(
        "workspaces/<int:workspace_id>/open/",
        views.WorkspaceOpenView.as_view(),
        name="workspace_open",
    ),
]

# The person's own SSH keys (no organization in the URL), linked from the profile page.
user_urlpatterns = [
    path("profile/ssh-keys/", views.SshKeysView.as_view(), name="ssh_keys"),
    path(
        "profile/ssh-keys/<int:key_id>/remove/",
        views.SshKeyRemoveView.as_view(),
        name="ssh_key_remove",
    ),
]
