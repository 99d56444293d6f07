"""Cloud pages: list, add (per kind, in steps), setup instructions, detail with live
verification, edit, verify, delete, and the instances Raydeck manages there."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers

from accounts.models import Project
from accounts.permissions import has_perm, require
from accounts.views.base import OrgListView, OrgView
from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import done

from . import policies, selectors, services
from .choices import CloudKind, CloudState, VerificationState
from .forms import AWS_REGIONS, CLOUD_FORMS, IDENTITY_FORMS, CloudForm, DefaultCloudForm
from .models import Cloud
from .providers.base import CloudError


class CloudListView(OrgListView):
    permission = "cloud.view"
    manage_permission = "cloud.manage"
    template = "clouds/cloud_list.html"

    def rows(self) -> QuerySet[Cloud]:
        return selectors.cloud_list(organization=self.organization, viewer=self.request.user)


class CloudAddView(OrgView):
    """Step 1: choose where clusters will run."""

    permission = "cloud.manage"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        kinds = [(kind, label, services.kind_available(kind)) for kind, label in CloudKind.choices]
        return self.render("clouds/cloud_add.html", {"kinds": kinds})


class CloudCreateView(OrgView):
    """Step 2: name it and say where; AWS and GCP go on to the setup step."""

    permission = "cloud.manage"
    template = "clouds/cloud_form.html"

    def load_objects(self, **kwargs: Any) -> None:
        if kwargs["kind"] not in CLOUD_FORMS:
            raise Http404("No such kind of cloud.")
        self.kind = kwargs["kind"]

    def form(self, data: Any = None) -> CloudForm:
        return CLOUD_FORMS[self.kind](data, organization=self.organization)

    def context(self, form: CloudForm) -> dict[str, Any]:
        return {
            "form": form,
            "kind": self.kind,
            "kind_label": CloudKind(self.kind).label,
            "unavailable": services.kind_available(self.kind),
            "aws_regions": AWS_REGIONS,
        }

    def get(self, request: AuthedRequest, org_slug: str, kind: str) -> HttpResponse:
        return self.render(self.template, self.context(self.form()))

    def post(self, request: AuthedRequest, org_slug: str, kind: str) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                cloud = services.cloud_create(
                    organization=self.organization,
                    actor=request.user,
                    kind=self.kind,
                    **form.service_fields(),
                )
                step = "cloud_detail" if cloud.identity_configured else "cloud_setup"
                return done(
                    request,
                    reverse(step, args=[org_slug, cloud.pk]),
                    f"Cloud {cloud.name} added."
                    + (" Verifying it now." if cloud.identity_configured else ""),
                )
        return self.render(self.template, self.context(form))


class CloudObjectView(OrgView):
    cloud: Cloud

    def load_objects(self, **kwargs: Any) -> None:
        self.cloud = self.object_or_404(Cloud, pk=kwargs["cloud_id"])

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        return super().render(template, {"cloud": self.cloud, **(context or {})}, status)


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class CloudDetailView(CloudObjectView):
    permission = "cloud.view"
    template = "clouds/cloud_detail.html"

    def get(self, request: AuthedRequest, org_slug: str, cloud_id: int) -> HttpResponse:
        verifications = selectors.cloud_verifications(cloud=self.cloud)
        latest = verifications[0] if verifications else None
        running = latest is not None and latest.state == VerificationState.RUNNING
        context = {
            "latest": latest,
            "history": verifications[1:],
            "running": running,
            "can_manage": has_perm(request.user, "cloud.manage", self.cloud),
        }
        if request.htmx and request.htmx.target == "verification":
            response = self.render(f"{self.template}#verification", context)
            if not running:
                # Final: polling ends, and the page reloads once so the state badge,
                # the buttons and the instance list all show the outcome.
                response["HX-Refresh"] = "true"
            return response
        return self.render(self.template, context)


class CloudSetupView(CloudObjectView):
    """Step 3 for AWS and GCP: what to create in your account, then paste it back."""

    permission = "cloud.manage"
    template = "clouds/cloud_setup.html"

    def context(self, form: Any) -> dict[str, Any]:
        context: dict[str, Any] = {"form": form}
        if self.cloud.kind == CloudKind.AWS:
            context["documents"] = policies.aws_documents(self.cloud)
        else:
            context["gcp_commands"] = policies.gcp_commands(self.cloud)
        return context

    def get(self, request: AuthedRequest, org_slug: str, cloud_id: int) -> HttpResponse:
        if self.cloud.kind not in IDENTITY_FORMS:  # the local cloud needs no setup
            return redirect("cloud_detail", org_slug, cloud_id)
        initial = {f: getattr(self.cloud, f) for f in IDENTITY_FORMS[self.cloud.kind].base_fields}
        return self.render(
            self.template, self.context(IDENTITY_FORMS[self.cloud.kind](initial=initial))
        )

    def post(self, request: AuthedRequest, org_slug: str, cloud_id: int) -> HttpResponse:
        if self.cloud.kind not in IDENTITY_FORMS:
            return redirect("cloud_detail", org_slug, cloud_id)
        form = IDENTITY_FORMS[self.cloud.kind](request.POST)
        if form.is_valid():
            with service_errors_on(form):
                services.cloud_update(cloud=self.cloud, actor=request.user, **form.cleaned_data)
                return done(
                    request,
                    reverse("cloud_detail", args=[org_slug, self.cloud.pk]),
                    "Saved. Raydeck is verifying the connection now.",
                )
        return self.render(self.template, self.context(form))


class CloudEditView(CloudObjectView):
    permission = "cloud.manage"
    template = "clouds/cloud_form.html"

    def form(self, data: Any = None) -> CloudForm:
        form_class = CLOUD_FORMS[self.cloud.kind]
        initial = {f: getattr(self.cloud, f) for f in form_class.base_fields if f != "projects"}
        if "zones" in initial:
            initial["zones"] = ", ".join(self.cloud.zones)
        if "gateway_cidrs" in initial:
            initial["gateway_cidrs"] = "\n".join(self.cloud.gateway_cidrs)
        initial["projects"] = list(self.cloud.projects.all())
        return form_class(data, initial=initial, organization=self.organization)

    def context(self, form: CloudForm) -> dict[str, Any]:
        return {
            "form": form,
            "kind": self.cloud.kind,
            "editing": True,
            "kind_label": self.cloud.get_kind_display(),
            "aws_regions": AWS_REGIONS,
        }

    def get(self, request: AuthedRequest, org_slug: str, cloud_id: int) -> HttpResponse:
        return self.render(self.template, self.context(self.form()))

    def post(self, request: AuthedRequest, org_slug: str, cloud_id: int) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                services.cloud_update(cloud=self.cloud, actor=request.user, **form.service_fields())
                return done(
                    request, reverse("cloud_detail", args=[org_slug, self.cloud.pk]), "Saved."
                )
        return self.render(self.template, self.context(form))


class CloudVerifyView(CloudObjectView):
    permission = "cloud.manage"

    def post(self, request: AuthedRequest, org_slug: str, cloud_id: int) -> HttpResponse:
        url = reverse("cloud_detail", args=[org_slug, self.cloud.pk])
        try:
            services.cloud_verify_request(cloud=self.cloud, actor=request.user)
        except ValidationError as exc:
            from django.contrib import messages

            messages.error(request, " ".join(exc.messages))
            return done(request, url)
        return done(request, url, "Verification started.")


class CloudDeleteView(CloudObjectView):
    permission = "cloud.manage"

    def get(self, request: AuthedRequest, org_slug: str, cloud_id: int) -> HttpResponse:
        return self.render(
            "clouds/cloud_delete.html", {"live": services.live_cluster_count(self.cloud)}
        )

    def post(self, request: AuthedRequest, org_slug: str, cloud_id: int) -> HttpResponse:
        try:
            services.cloud_delete(cloud=self.cloud, actor=request.user)
        except ValidationError as exc:
            return self.render(
                "clouds/cloud_delete.html",
                {"error": " ".join(exc.messages), "live": services.live_cluster_count(self.cloud)},
                status=409,
            )
        return done(request, reverse("cloud_list", args=[org_slug]), f"{self.cloud.name} deleted.")


class CloudInstancesView(CloudObjectView):
    """The instances Raydeck manages on this cloud, asked of the cloud itself. Loaded
    into the detail page after it renders, so a slow cloud never delays the page."""

    permission = "cloud.view"

    def get(self, request: AuthedRequest, org_slug: str, cloud_id: int) -> HttpResponse:
        instances, error = [], None
        if self.cloud.state == CloudState.ACTIVE:
            from .providers.registry import provider_for

            try:
                instances = provider_for(self.cloud).list_instances()
            except CloudError as exc:
                error = exc.user_message
        return self.render(
            "clouds/cloud_detail.html#instances", {"instances": instances, "error": error}
        )


class DefaultCloudView(OrgView):
    """The organization's preferred default cloud: its own page, and a card the
    organization settings page loads (the `default-cloud` partial). Saving returns to
    the settings page."""

    permission = "organization.view"
    change_permission = "organization.update"
    template = "clouds/default_cloud.html"
    project: Project | None = None

    def back_url(self) -> str:
        return reverse("organization_settings", args=[self.organization.slug])

    def help_text(self) -> str:
        return (
            "Used when a cluster, job or workspace names no cloud and its project has no "
            "preference of its own. A compute config's own cloud always wins."
        )

    def current(self) -> Cloud | None:
        return selectors.default_cloud(organization=self.organization, project=self.project)

    def form(self, data: Any = None) -> DefaultCloudForm:
        return DefaultCloudForm(
            data,
            organization=self.organization,
            help_text=self.help_text(),
            initial={"cloud": self.current()},
        )

    def show(self, form: DefaultCloudForm) -> HttpResponse:
        target = self.project or self.organization
        context = {
            "form": form,
            "current": self.current(),
            "scope": target,
            "can_change": has_perm(self.request.user, self.change_permission, target),
            "action": self.request.path,
            "back_url": self.back_url(),
        }
        return self.render(self.partial(self.template, "default-cloud"), context)

    def get(self, request: AuthedRequest, org_slug: str, **kwargs: Any) -> HttpResponse:
        return self.show(self.form())

    def post(self, request: AuthedRequest, org_slug: str, **kwargs: Any) -> HttpResponse:
        require(request.user, self.change_permission, self.project or self.organization)
        form = self.form(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                services.default_cloud_set(
                    organization=self.organization,
                    project=self.project,
                    cloud=form.cleaned_data["cloud"],
                    actor=request.user,
                )
                return done(request, self.back_url(), "Preferred default cloud saved.")
        return self.show(form)


class ProjectDefaultCloudView(DefaultCloudView):
    """A project's preferred default cloud, loaded into the project's settings page."""

    permission = "project.view"
    change_permission = "project.update"

    def load_objects(self, **kwargs: Any) -> None:
        self.project = self.object_or_404(Project, slug=kwargs["project_slug"])

    def permission_target(self) -> Any:
        return self.project

    project: Project

    def back_url(self) -> str:
        return reverse("project_edit", args=[self.organization.slug, self.project.slug])

    def help_text(self) -> str:
        return (
            "Used when a cluster, job or workspace of this project names no cloud; it "
            "overrides the organization's preference. A compute config's own cloud wins."
        )
