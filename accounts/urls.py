"""Organization-scoped pages: mounted under /o/<org_slug>/ by console/urls.py."""

from django.urls import path

from . import views

org_urlpatterns = [
    path("settings/", views.OrganizationSettingsView.as_view(), name="organization_settings"),
    path("members/", views.MemberListView.as_view(), name="member_list"),
    path("members/<int:membership_id>/role/", views.MemberRoleView.as_view(), name="member_role"),
    path(
        "members/<int:membership_id>/remove/",
        views.MemberRemoveView.as_view(),
        name="member_remove",
    ),
    path("invitations/new/", views.InvitationCreateView.as_view(), name="invitation_create"),
    path(
        "invitations/<int:invitation_id>/revoke/",
        views.InvitationRevokeView.as_view(),
        name="invitation_revoke",
    ),
    path(
        "invitations/<int:invitation_id>/resend/",
        views.InvitationResendView.as_view(),
        name="invitation_resend",
    ),
    path("projects/", views.ProjectListView.as_view(), name="project_list"),
    path("projects/new/", views.ProjectCreateView.as_view(), name="project_create"),
    path("projects/<slug:project_slug>/", views.ProjectDetailView.as_view(), name="project_detail"),
    path(
        "projects/<slug:project_slug>/edit/", views.ProjectEditView.as_view(), name="project_edit"
    ),
    path(
        "projects/<slug:project_slug>/delete/",
        views.ProjectDeleteView.as_view(),
        name="project_delete",
    ),
    path(
        "projects/<slug:project_slug>/members/<int:member_id>/role/",
        views.ProjectMemberRoleView.as_view(),
        name="project_member_role",
    ),
    path(
        "projects/<slug:project_slug>/members/<int:member_id>/remove/",
        views.ProjectMemberRemoveView.as_view(),
        name="project_member_remove",
    ),
    path("audit/", views.AuditLogView.as_view(), name="audit_log"),
    path("audit/export.jsonl", views.AuditExportView.as_view(), name="audit_export"),
]

user_urlpatterns = [
    path("orgs/new/", views.OrganizationCreateView.as_view(), name="organization_create"),
    path(
        "invitations/<str:token>/", views.InvitationAcceptView.as_view(), name="invitation_accept"
    ),
    path("profile/", views.ProfileView.as_view(), name="profile"),
]
