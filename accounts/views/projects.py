"""Project pages: list, create, view, edit, delete a project, and manage its members."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers

from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import done, paginate

from .. import selectors
from ..choices import ProjectRole
from ..forms import ProjectCreateForm, ProjectEditForm, ProjectMemberAddForm, ProjectMemberRoleForm
from ..models import (
    Project,
    ProjectMembership,
)
from ..permissions import has_perm, require
from ..services.projects import (
    project_create,
    project_delete,
    project_member_add,
    project_member_change_role,
    project_member_remove,
    project_update,
)
from .base import OrgFormView, OrgView
from .common import is_validation_only


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
class ProjectCreateView(OrgFormView):
    permission = "project.create"
    template = "accounts/project_create.html"

    def form(self, data: Any = None) -> ProjectCreateForm:
        form = ProjectCreateForm(data, organization=self.organization)
        form.live_check(self.request.path)
        return form

    def post(self, request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if is_validation_only(request):
            return self.render(
                "console/_slug_feedback.html",
                {
                    "form": self.form(request.POST),
                    "prefix": f"/o/{self.organization.slug}/projects/",
                },
            )
        return super().post(request, *args, **kwargs)

    def submitted(self, form: forms.Form) -> HttpResponse:
        project = project_create(
            organization=self.organization, actor=self.request.user, **form.cleaned_data
        )
        return done(
            self.request,
            reverse("project_detail", args=[self.organization.slug, project.slug]),
            f"Project {project.name} created.",
        )


class ProjectObjectView(OrgView):
    """Base of pages about one project: the project is found inside the URL's
    organization among the projects the user may see, and permissions are checked on it."""

    permission = "project.view"
    project: Project

    def load_objects(self, **kwargs: Any) -> None:
        self.project = self.object_or_404(Project, slug=kwargs["project_slug"])

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
            with service_errors_on(form):
                project_member_add(project=self.project, actor=request.user, **form.cleaned_data)
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
            with service_errors_on(form):
                project_update(project=self.project, actor=request.user, **form.cleaned_data)
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
        project_delete(project=self.project, actor=request.user)
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
            pm = project_member_change_role(
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
        project_member_remove(project_membership=self.project_membership, actor=request.user)
        return done(
            request,
            reverse("project_detail", args=[org_slug, project_slug]),
            f"{self.project_membership.user} removed from {self.project.name}.",
        )
