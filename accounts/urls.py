"""Organization-scoped pages: mounted under /o/<org_slug>/ by console/urls.py."""

from django.urls import path

from .views import (
    audit_log,
    cli_handoff,
    invitations,
    members,
    organizations,
    profile,
    projects,
    service_accounts,
    tokens,
)

org_urlpatterns = [
    path(
        "settings/", organizations.OrganizationSettingsView.as_view(), name="organization_settings"
    ),
    path("members/", members.MemberListView.as_view(), name="member_list"),
    path("members/<int:membership_id>/role/", members.MemberRoleView.as_view(), name="member_role"),
    path(
        "members/<int:membership_id>/remove/",
        members.MemberRemoveView.as_view(),
        name="member_remove",
    ),
    path("invitations/new/", invitations.InvitationCreateView.as_view(), name="invitation_create"),
    path(
        "invitations/<int:invitation_id>/revoke/",
        invitations.InvitationRevokeView.as_view(),
        name="invitation_revoke",
    ),
    path(
        "invitations/<int:invitation_id>/resend/",
        invitations.InvitationResendView.as_view(),
        name="invitation_resend",
    ),
    path("projects/", projects.ProjectListView.as_view(), name="project_list"),
    path("projects/new/", projects.ProjectCreateView.as_view(), name="project_create"),
    path(
        "projects/<slug:project_slug>/", projects.ProjectDetailView.as_view(), name="project_detail"
    ),
    path(
        "projects/<slug:project_slug>/edit/",
        projects.ProjectEditView.as_view(),
        name="project_edit",
    ),
    path(
        "projects/<slug:project_slug>/delete/",
        projects.ProjectDeleteView.as_view(),
        name="project_delete",
    ),
    path(
        "projects/<slug:project_slug>/members/<int:member_id>/role/",
        projects.ProjectMemberRoleView.as_view(),
        name="project_member_role",
    ),
    path(
        "projects/<slug:project_slug>/members/<int:member_id>/remove/",
        projects.ProjectMemberRemoveView.as_view(),
        name="project_member_remove",
    ),
    path("tokens/", tokens.TokenListView.as_view(), name="token_list"),
    path("tokens/new/", tokens.TokenCreateView.as_view(), name="token_create"),
    path("tokens/<int:token_id>/revoke/", tokens.TokenRevokeView.as_view(), name="token_revoke"),
    path(
        "tokens/service-accounts/",
        service_accounts.ServiceAccountListView.as_view(),
        name="service_account_list",
    ),
    path(
        "tokens/service-accounts/new/",
        service_accounts.ServiceAccountCreateView.as_view(),
        name="service_account_create",
    ),
    path(
        "tokens/service-accounts/<int:service_account_id>/",
        service_accounts.ServiceAccountDetailView.as_view(),
        name="service_account_detail",
    ),
    path(
        "tokens/service-accounts/<int:service_account_id>/tokens/new/",
        service_accounts.ServiceAccountTokenCreateView.as_view(),
        name="service_account_token_create",
    ),
    path(
        "tokens/service-accounts/<int:service_account_id>/disable/",
        service_accounts.ServiceAccountDisableView.as_view(),
        name="service_account_disable",
    ),
    path("audit/", audit_log.AuditLogView.as_view(), name="audit_log"),
    path("audit/export.jsonl", audit_log.AuditExportView.as_view(), name="audit_export"),
]

user_urlpatterns = [
    path("orgs/new/", organizations.OrganizationCreateView.as_view(), name="organization_create"),
    path(
        "invitations/<str:token>/",
        invitations.InvitationAcceptView.as_view(),
        name="invitation_accept",
    ),
    path("profile/", profile.ProfileView.as_view(), name="profile"),
    # `raydeck login`: the CLI starts and polls (JSON, no cookies); the person confirms.
    path("cli/handoff", cli_handoff.cli_handoff_start, name="cli_handoff_start"),
    path("cli/handoff/poll", cli_handoff.cli_handoff_poll, name="cli_handoff_poll"),
    path("cli/verify", cli_handoff.CliVerifyView.as_view(), name="cli_verify"),
]
