"""Workspace pages: the list, New workspace, the live workspace page, its Settings, start,
stop and delete (with confirmation) and Open JupyterLab. Views parse input and pick templates;
selectors read, services write."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.vary import vary_on_headers

from accounts.permissions import has_perm
from accounts.views.base import OrgView
from clusters import access
from clusters.views import CloudFieldsFormView
from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import done, paginate

from . import selectors
from .choices import ACTIVE_WORKSPACE_STATES, WorkspaceState
from .forms import SshKeyForm, WorkspaceCreateForm, WorkspaceJobForm, WorkspaceSettingsForm
from .models import SshKey, Workspace
from .services import (
    why_no_job,
    why_no_settings_change,
    workspace_create,
    workspace_delete,
    workspace_job_create,
    workspace_start,
    workspace_stop,
    workspace_update,
)
from .ssh_keys import ssh_key_add, ssh_key_remove


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class WorkspaceListView(OrgView):
    permission = "project.list"
    template = "workspaces/workspace_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        q = request.GET.get("q", "").strip()[:100]
        rows = selectors.workspace_list(organization=self.organization, viewer=request.user, q=q)
        return self.render(
            self.partial(self.template, "workspace-table"),
            {
                "page": paginate(request, rows),
                "q": q,
                "can_create": selectors.may_create_workspaces(
                    organization=self.organization, viewer=request.user
                ),
            },
        )


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class WorkspaceCreateView(CloudFieldsFormView):
    permission = "project.list"
    template = "workspaces/workspace_create.html"

    def form(self, data: Any = None) -> WorkspaceCreateForm:
        initial: dict[str, Any] = {}
        if data is None:
            get = self.request.GET
            initial = {k: get[k] for k in ("project", "cloud") if get.get(k)}
        form = WorkspaceCreateForm(
            data, organization=self.organization, viewer=self.request.user, initial=initial
        )
        if not form.can_create:
            raise PermissionDenied("You may not create workspaces in any project here.")
        form.follow_cloud(reverse("workspace_create", args=[self.organization.slug]))
        return form

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            with service_errors_on(form):
                workspace = workspace_create(
                    project=data["project"],
                    actor=request.user,
                    name=data["name"],
                    cloud=data["cloud"],
                    compute_config=data["compute_config"],
                    image=data["image"],
                )
                return done(
                    request,
                    reverse("workspace_detail", args=[org_slug, workspace.pk]),
                    f"Workspace {workspace.name} created. Start it to get JupyterLab.",
                )
        return self.render(self.template, {"form": form})


class WorkspaceObjectView(OrgView):
    """A page of one workspace, reached only through `visible_to` inside the
    organization of the URL (another organization's is a 404)."""

    permission = "project.view"
    workspace: Workspace

    def load_objects(self, **kwargs: Any) -> None:
        self.workspace = self.object_or_404(
            self.scoped(Workspace).select_related(
                "project",
                "cloud",
                "cluster",
                "compute_config__config",
                "image",
                "image_build",
                "created_by",
            ),
            pk=kwargs["workspace_id"],
        )

    def permission_target(self) -> Any:
        return self.workspace

    def detail_url(self) -> str:
        return reverse("workspace_detail", args=[self.organization.slug, self.workspace.pk])

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {
            "workspace": self.workspace,
            "can_manage": has_perm(self.request.user, "workspace.manage", self.workspace),
            "no_settings_change": why_no_settings_change(self.workspace),
        }
        return super().render(template, {**base, **(context or {})}, status)


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class WorkspaceDetailView(WorkspaceObjectView):
    template = "workspaces/workspace_detail.html"

    def get(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        workspace = self.workspace
        live = workspace.state in (WorkspaceState.STARTING, WorkspaceState.STOPPING) or bool(
            workspace.image_build and not workspace.image_build.is_final
        )
        context = {
            "live": live,
            "jupyter_ready": selectors.jupyter_ready(workspace),
            "can_access": has_perm(request.user, "cluster.access", workspace.project),
            "rules": selectors.files_rules(),
            "active": workspace.state in ACTIVE_WORKSPACE_STATES,
            "has_ssh_key": request.user.ssh_keys.exists(),
            "can_submit_job": has_perm(request.user, "job.submit", workspace.project),
        }
        if request.htmx and request.htmx.target == "workspace-live":
            response = self.render(f"{self.template}#workspace-live", context)
            if not live:
                response["HX-Refresh"] = "true"  # settled: the actions change too
            return response
        return self.render(self.template, context)


class WorkspaceStartView(WorkspaceObjectView):
    permission = "workspace.manage"
    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        try:
            started = workspace_start(workspace=self.workspace, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return done(request, self.detail_url())
        if started.start_when_built_by_id:
            return done(request, self.detail_url(), started.state_reason)
        return done(request, self.detail_url(), f"Starting {self.workspace.name}.")


class WorkspaceStopView(WorkspaceObjectView):
    permission = "workspace.manage"
    template = "workspaces/workspace_stop.html"

    def get(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        return self.render(self.template, {"rules": selectors.files_rules()})

    def post(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        stopped = workspace_stop(workspace=self.workspace, actor=request.user)
        if self.workspace.start_when_built_by_id and not stopped.start_when_built_by_id:
            return done(request, self.detail_url(), stopped.state_reason)
        return done(
            request, self.detail_url(), f"Stopping {self.workspace.name}: saving its files."
        )


class WorkspaceSettingsView(WorkspaceObjectView):
    """Change a stopped workspace's name, compute config or image (workspace_update holds
    the rules); while it runs the page says why not instead of the form."""

    permission = "workspace.manage"
    template = "workspaces/workspace_settings.html"

    def form(self, data: Any = None) -> WorkspaceSettingsForm:
        return WorkspaceSettingsForm(data, workspace=self.workspace, viewer=self.request.user)

    def get(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        return self.render(self.template, {"form": self.form()})

    def post(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                updated = workspace_update(
                    workspace=self.workspace, actor=request.user, **form.cleaned_data
                )
                return done(
                    request,
                    self.detail_url(),
                    f"Settings of {updated.name} saved; its next start uses them.",
                )
        return self.render(self.template, {"form": form})


class WorkspaceDeleteView(WorkspaceObjectView):
    permission = "workspace.manage"
    template = "workspaces/workspace_delete.html"

    def get(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        return self.render(self.template)

    def post(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        try:
            workspace_delete(workspace=self.workspace, actor=request.user)
        except ValidationError as exc:
            return self.render(self.template, {"error": " ".join(exc.messages)}, status=409)
        return done(
            request,
            reverse("workspace_list", args=[org_slug]),
            f"Workspace {self.workspace.name} deleted.",
        )


class WorkspaceJobView(WorkspaceObjectView):
    """Create job from this workspace (workspace_job_create holds the rules)."""

    permission = "job.submit"
    template = "workspaces/workspace_job.html"

    def get(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        return self.render(self.template, self._context(WorkspaceJobForm()))

    def _context(self, form: WorkspaceJobForm) -> dict[str, Any]:
        return {"form": form, "refusal": why_no_job(self.workspace)}

    def post(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        form = WorkspaceJobForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            with service_errors_on(form):
                job = workspace_job_create(
                    workspace=self.workspace,
                    actor=request.user,
                    entrypoint=data["entrypoint"],
                    name=data["name"],
                    max_retries=data["max_retries"],
                    timeout_seconds=data["timeout_seconds"],
                )
                return done(
                    request,
                    reverse("job_detail", args=[org_slug, job.pk]),
                    f"Job {job.name} submitted with the files of {self.workspace.name}.",
                )
        return self.render(self.template, self._context(form))


class WorkspaceOpenView(WorkspaceObjectView):
    """Open JupyterLab: a fresh 5-minute link to the head's gateway (clusters.access),
    answered like the cluster page's app buttons (a page that moves on at once)."""

    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, workspace_id: int) -> HttpResponse:
        workspace = self.workspace
        if not selectors.jupyter_ready(workspace) or workspace.cluster is None:
            messages.error(request, "JupyterLab opens once the workspace is running.")
            return redirect(self.detail_url())
        try:
            url = access.open_app(user=request.user, cluster=workspace.cluster, app="jupyter")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect(self.detail_url())
        response = self.render(
            "clusters/cluster_open.html",
            {"url": url, "app": "JupyterLab", "cluster": workspace.cluster},
        )
        response["Referrer-Policy"] = "no-referrer"
        response["Cache-Control"] = "no-store"
        return response


# --- SSH keys (the person's own, from the profile page) -----------------------------------


class SshKeysView(View):
    """Your SSH public keys: the list, and the form that adds one."""

    template = "workspaces/ssh_keys.html"

    def render_page(
        self, request: AuthedRequest, form: SshKeyForm, status: int = 200
    ) -> HttpResponse:
        keys = SshKey.objects.filter(user=request.user)
        return render(request, self.template, {"form": form, "keys": keys}, status=status)

    def get(self, request: AuthedRequest) -> HttpResponse:
        return self.render_page(request, SshKeyForm())

    def post(self, request: AuthedRequest) -> HttpResponse:
        form = SshKeyForm(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                key = ssh_key_add(
                    user=request.user,
                    name=form.cleaned_data["name"],
                    public_key=form.cleaned_data["public_key"],
                )
                return done(request, reverse("ssh_keys"), f"Key {key.fingerprint} added.")
        return self.render_page(request, form)


class SshKeyRemoveView(View):
    template = "workspaces/ssh_key_remove.html"

    def key(self, request: AuthedRequest, key_id: int) -> SshKey:
        return get_object_or_404(SshKey, pk=key_id, user=request.user)  # another's: 404

    def get(self, request: AuthedRequest, key_id: int) -> HttpResponse:
        return render(request, self.template, {"key": self.key(request, key_id)})

    def post(self, request: AuthedRequest, key_id: int) -> HttpResponse:
        key = self.key(request, key_id)
        ssh_key_remove(user=request.user, key=key)
        return done(request, reverse("ssh_keys"), f"Key {key.fingerprint} removed.")
