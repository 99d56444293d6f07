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
    path("tokens/", views.TokenListView.as_view(), name="token_list"),
    path("tokens/new/", views.TokenCreateView.as_view(), name="token_create"),
    path("tokens/<int:token_id>/revoke/", views.TokenRevokeView.as_view(), name="token_revoke"),
    path(
        "tokens/service-accounts/",
        views.ServiceAccountListView.as_view(),
        name="service_account_list",
    ),
    path(
        "tokens/service-accounts/new/",
        views.ServiceAccountCreateView.as_view(),
        name="service_account_create",
    ),
    path(
        "tokens/service-accounts/<int:service_account_id>/",
        views.ServiceAccountDetailView.as_view(),
        name="service_account_detail",
    ),
    path(
        "tokens/service-accounts/<int:service_account_id>/tokens/new/",
        views.ServiceAccountTokenCreateView.as_view(),
        name="service_account_token_create",
    ),
    path(
        "tokens/service-accounts/<int:service_account_id>/disable/",
        views.ServiceAccountDisableView.as_view(),
        name="service_account_disable",
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
    # `raydeck login`: the CLI starts and polls (JSON, no cookies); the person confirms.
    path("cli/handoff", views.cli_handoff_start, name="cli_handoff_start"),
    path("cli/handoff/poll", views.cli_handoff_poll, name="cli_handoff_poll"),
    path("cli/verify", views.CliVerifyView.as_view(), name="cli_verify"),
]
