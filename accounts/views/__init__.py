"""Console pages for organizations, members, invitations, projects, the audit log and
the user's profile. Views parse input and pick templates; services do the work."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from console.types import AuthedRequest

from .. import selectors, services
from ..forms import (
    ProfileForm,
)
from .audit_log import (
    AuditExportView,
    AuditLogView,
)
from .cli_handoff import (
    POLL_ANSWERS,
    CliVerifyView,
    cli_handoff_poll,
    cli_handoff_start,
)
from .common import (
    is_validation_only,
)
from .invitations import (
    InvitationAcceptView,
    InvitationCreateView,
    InvitationObjectView,
    InvitationResendView,
    InvitationRevokeView,
)
from .members import (
    MemberListView,
    MemberRemoveView,
    MemberRoleView,
    MembershipObjectView,
)
from .organizations import (
    OrganizationCreateView,
    OrganizationSettingsView,
)
from .projects import (
    ProjectCreateView,
    ProjectDeleteView,
    ProjectDetailView,
    ProjectEditView,
    ProjectListView,
    ProjectMemberObjectView,
    ProjectMemberRemoveView,
    ProjectMemberRoleView,
    ProjectObjectView,
)
from .service_accounts import (
    ServiceAccountCreateView,
    ServiceAccountDetailView,
    ServiceAccountDisableView,
    ServiceAccountListView,
    ServiceAccountObjectView,
    ServiceAccountTokenCreateView,
)
from .tokens import (
    TokenCreateView,
    TokenListView,
    TokenObjectView,
    TokenRevokeView,
)

# --- The signed-in user ----------------------------------------------------------------


class ProfileView(View):
    template = "accounts/profile.html"

    def get(self, request: AuthedRequest, form: ProfileForm | None = None) -> HttpResponse:
        from allauth.mfa.models import Authenticator

        return render(
            request,
            self.template,
            {
                "form": form or ProfileForm(initial={"name": request.user.name}),
                "events": selectors.security_events_of(request.user),
                "mfa_enabled": Authenticator.objects.filter(
                    user=request.user, type=Authenticator.Type.TOTP
                ).exists(),
                "memberships": request.user.memberships.select_related("organization"),
            },
        )

    def post(self, request: AuthedRequest) -> HttpResponse:
        form = ProfileForm(request.POST)
        if form.is_valid():
            services.user_update_profile(user=request.user, name=form.cleaned_data["name"])
            messages.success(request, "Profile saved.")
            return redirect("profile")
        return self.get(request, form=form)


__all__ = [
    "POLL_ANSWERS",
    "AuditExportView",
    "AuditLogView",
    "CliVerifyView",
    "InvitationAcceptView",
    "InvitationCreateView",
    "InvitationObjectView",
    "InvitationResendView",
    "InvitationRevokeView",
    "MemberListView",
    "MemberRemoveView",
    "MemberRoleView",
    "MembershipObjectView",
    "OrganizationCreateView",
    "OrganizationSettingsView",
    "ProjectCreateView",
    "ProjectDeleteView",
    "ProjectDetailView",
    "ProjectEditView",
    "ProjectListView",
    "ProjectMemberObjectView",
    "ProjectMemberRemoveView",
    "ProjectMemberRoleView",
    "ProjectObjectView",
    "ServiceAccountCreateView",
    "ServiceAccountDetailView",
    "ServiceAccountDisableView",
    "ServiceAccountListView",
    "ServiceAccountObjectView",
    "ServiceAccountTokenCreateView",
    "TokenCreateView",
    "TokenListView",
    "TokenObjectView",
    "TokenRevokeView",
    "cli_handoff_poll",
    "cli_handoff_start",
    "is_validation_only",
]
