"""Console pages for organizations, members, invitations, projects, the audit log and
the user's profile. Views parse input and pick templates; services do the work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.vary import vary_on_headers

from console.types import AuthedRequest
from console.views import OrgView, done, paginate

from . import selectors, services
from .choices import ProjectRole
from .forms import (
    AuditFilterForm,
    InvitationForm,
    MemberRoleForm,
    OrganizationCreateForm,
    OrganizationSettingsForm,
    ProfileForm,
    ProjectCreateForm,
    ProjectEditForm,
    ProjectMemberAddForm,
    ProjectMemberRoleForm,
    add_service_error,
    assignable_roles,
)
from .models import Invitation, Membership, Project, ProjectMembership
from .permissions import has_perm, require


def _is_validation_only(request: AuthedRequest) -> bool:
    """HTMX live validation posts the form with this flag; nothing is saved."""
    return bool(request.htmx) and request.POST.get("_validate") == "1"


# --- Organizations -------------------------------------------------------------------


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class OrganizationCreateView(View):
    template = "accounts/organization_create.html"

    def form(self, data: Any = None) -> OrganizationCreateForm:
        form = OrganizationCreateForm(data)
        form.live_check(reverse("organization_create"))
        return form

    def get(self, request: AuthedRequest) -> HttpResponse:
        return render(request, self.template, {"form": self.form()})

    def post(self, request: AuthedRequest) -> HttpResponse:
        form = self.form(request.POST)
        if _is_validation_only(request):
            return render(request, "console/_slug_feedback.html", {"form": form, "prefix": "/o/"})
        if form.is_valid():
            try:
                org = services.organization_create(actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                return done(
                    request,
                    reverse("project_list", args=[org.slug]),
                    f"Organization {org.name} created.",
                )
        return render(request, self.template, {"form": form})


class OrganizationSettingsView(OrgView):
    permission = "organization.view"
    template = "accounts/organization_settings.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = OrganizationSettingsForm(initial={"name": self.organization.name})
        return self.render(self.template, {"form": form})

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        require(request.user, "organization.update", self.organization)
        form = OrganizationSettingsForm(request.POST)
        if form.is_valid():
            try:
                services.organization_update(
                    organization=self.organization,
                    name=form.cleaned_data["name"],
                    actor=request.user,
                )
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                return done(
                    request, reverse("organization_settings", args=[org_slug]), "Settings saved."
                )
        return self.render(self.template, {"form": form})


# --- Members and invitations ---------------------------------------------------------


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class MemberListView(OrgView):
    permission = "member.view"
    template = "accounts/member_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        members = selectors.membership_list(organization=self.organization, viewer=request.user)
        can_invite = has_perm(request.user, "member.invite", self.organization)
        return self.render(
            self.template,
            {
                "page": paginate(request, members),
                "invitations": selectors.invitation_list(
                    organization=self.organization, viewer=request.user
                )
                if can_invite
                else [],
                "roles": assignable_roles(request.user, self.organization),
                "can_manage": has_perm(request.user, "member.update_role", self.organization),
                "can_invite": can_invite,
            },
        )


class MembershipObjectView(OrgView):
    membership: Membership

    def load_objects(self, **kwargs: Any) -> None:
        self.membership = get_object_or_404(
            Membership.objects.visible_to(self.request.user)
            .filter(organization=self.organization)
            .select_related("user", "organization"),
            pk=kwargs["membership_id"],
        )


class MemberRoleView(MembershipObjectView):
    permission = "member.update_role"

    def post(self, request: AuthedRequest, org_slug: str, membership_id: int) -> HttpResponse:
        membership = self.membership
        form = MemberRoleForm(request.POST)
        error = None
        if form.is_valid():
            try:
                membership = services.membership_change_role(
                    membership=membership, role=form.cleaned_data["role"], actor=request.user
                )
            except ValidationError as exc:
                error = " ".join(exc.messages)
        else:
            error = "Choose one of the listed roles."
        if request.htmx:
            membership.refresh_from_db()
            return self.render(
                "accounts/member_list.html#member-row",
                {
                    "m": membership,
                    "row_error": error,
                    "saved": error is None,
                    "roles": assignable_roles(request.user, self.organization),
                    "can_manage": True,
                },
            )
        if error:
            messages.error(request, error)
        else:
            messages.success(request, f"{membership.user} is now {membership.get_role_display()}.")
        return redirect("member_list", org_slug=org_slug)


class MemberRemoveView(MembershipObjectView):
    """Confirm, then remove a member (or leave, when it is your own membership)."""

    template = "accounts/member_remove.html"

    def get(self, request: AuthedRequest, org_slug: str, membership_id: int) -> HttpResponse:
        membership = self.membership
        return self.render(
            self.template, {"m": membership, "leaving": membership.user_id == request.user.pk}
        )

    def post(self, request: AuthedRequest, org_slug: str, membership_id: int) -> HttpResponse:
        membership = self.membership
        leaving = membership.user_id == request.user.pk
        try:
            services.membership_remove(membership=membership, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("member_list", org_slug=org_slug)
        if leaving:
            request.session.pop("raydeck_org", None)
            return done(request, reverse("home"), f"You left {self.organization.name}.")
        return done(
            request,
            reverse("member_list", args=[org_slug]),
            f"{membership.user} was removed from {self.organization.name}.",
        )


class InvitationCreateView(OrgView):
    permission = "member.invite"
    template = "accounts/invitation_create.html"

    def form(self, data: Any = None) -> InvitationForm:
        return InvitationForm(data, actor=self.request.user, organization=self.organization)

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        return self.render(self.template, {"form": self.form()})

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            try:
                invitation = services.invitation_create(
                    organization=self.organization, actor=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                return done(
                    request,
                    reverse("member_list", args=[org_slug]),
                    f"Invitation sent to {invitation.email}.",
                )
        return self.render(self.template, {"form": form})


class InvitationObjectView(OrgView):
    permission = "member.invite"
    invitation: Invitation

    def load_objects(self, **kwargs: Any) -> None:
        self.invitation = get_object_or_404(
            Invitation.objects.visible_to(self.request.user).filter(organization=self.organization),
            pk=kwargs["invitation_id"],
        )


class InvitationRevokeView(InvitationObjectView):
    def get(self, request: AuthedRequest, org_slug: str, invitation_id: int) -> HttpResponse:
        return self.render("accounts/invitation_revoke.html", {"invitation": self.invitation})

    def post(self, request: AuthedRequest, org_slug: str, invitation_id: int) -> HttpResponse:
        invitation = self.invitation
        try:
            services.invitation_revoke(invitation=invitation, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"Invitation of {invitation.email} revoked.")
        return redirect("member_list", org_slug=org_slug)


class InvitationResendView(InvitationObjectView):
    def post(self, request: AuthedRequest, org_slug: str, invitation_id: int) -> HttpResponse:
        invitation = self.invitation
        try:
            services.invitation_resend(invitation=invitation, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"A new invitation link was sent to {invitation.email}.")
        return redirect("member_list", org_slug=org_slug)


@method_decorator(login_not_required, name="dispatch")
class InvitationAcceptView(View):
    """The link in the invitation email. Works before sign-up: it explains what to do,
    and keeps the link as `next` through sign-in."""

    template = "accounts/invitation_accept.html"

    def load(self, token: str) -> tuple[Invitation | None, str | None]:
        try:
            return services.invitation_from_token(token), None
        except services.InvalidInvitation as exc:
            return None, str(exc)

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        invitation, error = self.load(token)
        return render(
            request,
            self.template,
            {"invitation": invitation, "error": error, "token": token},
            status=404 if error else 200,
        )

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect(f"{reverse('account_login')}?{urlencode({'next': request.path})}")
        invitation, error = self.load(token)
        if invitation is None:
            return render(request, self.template, {"error": error}, status=404)
        try:
            membership = services.invitation_accept(invitation=invitation, user=request.user)
        except ValidationError as exc:
            return render(
                request,
                self.template,
                {
                    "invitation": invitation,
                    "error": " ".join(exc.messages),
                    "token": token,
                },
                status=400,
            )
        messages.success(request, f"Welcome to {membership.organization.name}.")
        return redirect("project_list", org_slug=membership.organization.slug)


# --- Projects ------------------------------------------------------------------------


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class ProjectListView(OrgView):
    permission = "project.list"
    template = "accounts/project_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        query = request.GET.get("q", "").strip()
        projects = selectors.project_list(
            organization=self.organization, viewer=request.user, query=query
        )
        page = paginate(request, projects)
        return self.render(
            self.partial(self.template, "project-table"),
            {
                "page": page,
                "q": query,
                "can_create": has_perm(request.user, "project.create", self.organization),
            },
        )


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class ProjectCreateView(OrgView):
    permission = "project.create"
    template = "accounts/project_create.html"

    def form(self, data: Any = None) -> ProjectCreateForm:
        form = ProjectCreateForm(data, organization=self.organization)
        form.live_check(self.request.path)
        return form

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        return self.render(self.template, {"form": self.form()})

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = self.form(request.POST)
        if _is_validation_only(request):
            return self.render(
                "console/_slug_feedback.html", {"form": form, "prefix": f"/o/{org_slug}/projects/"}
            )
        if form.is_valid():
            try:
                project = services.project_create(
                    organization=self.organization, actor=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                return done(
                    request,
                    reverse("project_detail", args=[org_slug, project.slug]),
                    f"Project {project.name} created.",
                )
        return self.render(self.template, {"form": form})


class ProjectObjectView(OrgView):
    """Base of pages about one project: the project is found inside the URL's
    organization among the projects the user may see, and permissions are checked on it."""

    permission = "project.view"
    project: Project

    def load_objects(self, **kwargs: Any) -> None:
        self.project = get_object_or_404(
            Project.objects.visible_to(self.request.user, self.organization),
            slug=kwargs["project_slug"],
        )

    def permission_target(self) -> Any:
        return self.project

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        return super().render(template, {"project": self.project, **(context or {})}, status)


class ProjectDetailView(ProjectObjectView):
    template = "accounts/project_detail.html"

    def get(
        self,
        request: AuthedRequest,
        org_slug: str,
        project_slug: str,
        add_form: ProjectMemberAddForm | None = None,
    ) -> HttpResponse:
        can_manage = has_perm(request.user, "project.manage_members", self.project)
        return self.render(
            self.template,
            {
                "members": selectors.project_members(project=self.project, viewer=request.user),
                "add_form": add_form
                or (ProjectMemberAddForm(project=self.project) if can_manage else None),
                "can_manage": can_manage,
                "can_edit": has_perm(request.user, "project.update", self.project),
                "can_delete": has_perm(request.user, "project.delete", self.project),
                "project_roles": ProjectRole.choices,
            },
        )

    def post(self, request: AuthedRequest, org_slug: str, project_slug: str) -> HttpResponse:
        """Add a member to the project."""
        require(request.user, "project.manage_members", self.project)
        form = ProjectMemberAddForm(request.POST, project=self.project)
        if form.is_valid():
            try:
                services.project_member_add(
                    project=self.project, actor=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                return done(
                    request,
                    request.path,
                    f"{form.cleaned_data['user']} added to {self.project.name}.",
                )
        return self.get(request, org_slug, project_slug, add_form=form)


class ProjectEditView(ProjectObjectView):
    permission = "project.update"
    template = "accounts/project_edit.html"

    def get(self, request: AuthedRequest, org_slug: str, project_slug: str) -> HttpResponse:
        form = ProjectEditForm(
            initial={"name": self.project.name, "description": self.project.description}
        )
        return self.render(self.template, {"form": form})

    def post(self, request: AuthedRequest, org_slug: str, project_slug: str) -> HttpResponse:
        form = ProjectEditForm(request.POST)
        if form.is_valid():
            try:
                services.project_update(
                    project=self.project, actor=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                return done(
                    request,
                    reverse("project_detail", args=[org_slug, project_slug]),
                    "Project saved.",
                )
        return self.render(self.template, {"form": form})


class ProjectDeleteView(ProjectObjectView):
    permission = "project.delete"

    def get(self, request: AuthedRequest, org_slug: str, project_slug: str) -> HttpResponse:
        return self.render("accounts/project_delete.html")

    def post(self, request: AuthedRequest, org_slug: str, project_slug: str) -> HttpResponse:
        name = self.project.name
        services.project_delete(project=self.project, actor=request.user)
        return done(request, reverse("project_list", args=[org_slug]), f"Project {name} deleted.")


class ProjectMemberObjectView(ProjectObjectView):
    permission = "project.manage_members"
    project_membership: ProjectMembership

    def load_objects(self, **kwargs: Any) -> None:
        super().load_objects(**kwargs)
        self.project_membership = get_object_or_404(
            ProjectMembership.objects.visible_to(self.request.user)
            .filter(project=self.project)
            .select_related("user", "project"),
            pk=kwargs["member_id"],
        )


class ProjectMemberRoleView(ProjectMemberObjectView):
    def post(
        self, request: AuthedRequest, org_slug: str, project_slug: str, member_id: int
    ) -> HttpResponse:
        form = ProjectMemberRoleForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose one of the listed roles.")
        else:
            pm = services.project_member_change_role(
                project_membership=self.project_membership,
                role=form.cleaned_data["role"],
                actor=request.user,
            )
            messages.success(request, f"{pm.user} is now {pm.get_role_display()} here.")
        return done(request, reverse("project_detail", args=[org_slug, project_slug]))


class ProjectMemberRemoveView(ProjectMemberObjectView):
    def get(
        self, request: AuthedRequest, org_slug: str, project_slug: str, member_id: int
    ) -> HttpResponse:
        return self.render("accounts/project_member_remove.html", {"pm": self.project_membership})

    def post(
        self, request: AuthedRequest, org_slug: str, project_slug: str, member_id: int
    ) -> HttpResponse:
        services.project_member_remove(
            project_membership=self.project_membership, actor=request.user
        )
        return done(
            request,
            reverse("project_detail", args=[org_slug, project_slug]),
            f"{self.project_membership.user} removed from {self.project.name}.",
        )


# --- Audit log -----------------------------------------------------------------------


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class AuditLogView(OrgView):
    permission = "audit.view"
    template = "accounts/audit_log.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = AuditFilterForm(request.GET or None)
        filters = form.cleaned_data if form.is_valid() else {}
        events = selectors.audit_event_list(
            organization=self.organization, viewer=request.user, filters=filters
        )
        query = request.GET.copy()
        query.pop("page", None)
        return self.render(
            self.partial(self.template, "audit-table"),
            {
                "form": form,
                "page": paginate(request, events),
                "query": query.urlencode(),
            },
        )


class AuditExportView(OrgView):
    """The filtered audit log as JSON Lines, streamed so a large log needs no memory."""

    permission = "audit.view"

    def get(self, request: AuthedRequest, org_slug: str) -> StreamingHttpResponse:
        form = AuditFilterForm(request.GET or None)
        filters = form.cleaned_data if form.is_valid() else {}
        events = selectors.audit_event_list(
            organization=self.organization, viewer=request.user, filters=filters
        ).select_related("organization")

        def lines() -> Iterator[str]:
            for event in events.iterator(chunk_size=2000):
                yield json.dumps(event.as_json(), separators=(",", ":")) + "\n"

        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = StreamingHttpResponse(lines(), content_type="application/jsonl")
        response["Content-Disposition"] = (
            f'attachment; filename="raydeck-audit-{org_slug}-{stamp}.jsonl"'
        )
        return response


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
