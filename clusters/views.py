"""Cluster pages: the list with filters, the create form, the live cluster page, the
terminate and restart actions, and each node's log tail; compute config pages: the
list, create, the config with its versions, and edit (a new version); image pages: the
list, create, edit and delete. Views parse input and pick
templates; selectors read, services write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers

from accounts.permissions import has_perm
from accounts.views.base import OrgFormView, OrgListView, OrgView
from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import done, paginate

from . import access, certificates, charts, selectors
from .choices import FINAL_CLUSTER_STATES, ClusterState, DesiredState
from .forms import (
    ClusterCreateForm,
    ClusterFilterForm,
    ComputeConfigForm,
    ImageForm,
    NodeLogFilterForm,
)
from .models import Cluster, ComputeConfig, ComputeConfigVersion, ContainerImage, Node
from .services.configs import compute_config_create, compute_config_update
from .services.idle import cluster_idleness, cluster_keep_running
from .services.images import image_create, image_delete, image_update, live_clusters_using
from .services.lifecycle import cluster_create, cluster_restart, cluster_terminate

# What to do next, per way a cluster can fail (matched on the reason's words). The
# reconciler's reason says what went wrong; this says what to do about it here.
FAILURE_ADVICE = [
    (
        "did not get an instance",
        "Restart later, when the cloud has capacity again, or "
        "create the cluster with a compute config that uses another zone or instance type.",
    ),
    (
        "did not register",
        "Once nodes can reach Raydeck's address, restart the cluster. The "
        "nodes' logs below show how far their agents got.",
    ),
    (
        "did not start Ray",
        "Open the head node's log below to see why Ray did not start; fix "
        "the image or the compute config, then restart.",
    ),
    (
        "stopped responding",
        "Restart the cluster. If it keeps happening, give the head node "
        "more memory in the compute config.",
    ),
    (
        "Could not launch",
        "Open the cloud's page and verify it again (its permissions or "
        "quotas may have changed), then restart.",
    ),
]
DEFAULT_ADVICE = (
    "Read the events below and the nodes' logs. When the cause is fixed, restart the cluster."
)


class ProjectMissing(Exception):
    """The organization has no project yet; the person may create the first."""


def failure_advice(reason: str) -> str:
    for words, advice in FAILURE_ADVICE:
        if words.lower() in reason.lower():
            return advice
    return DEFAULT_ADVICE


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class ClusterListView(OrgView):
    permission = "project.list"
    template = "clusters/cluster_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        projects, clouds = selectors.cluster_filter_choices(
            organization=self.organization, viewer=request.user
        )
        form = ClusterFilterForm(request.GET, projects=projects, clouds=clouds)
        filters = form.filters()
        clusters = selectors.cluster_list(
            organization=self.organization, viewer=request.user, **filters
        )
        query = request.GET.copy()
        query.pop("page", None)
        filtered = any(v not in ("", None) for v in filters.values())
        can_create = selectors.projects_for_cluster_create(
            organization=self.organization, viewer=request.user
        ).exists()
        return self.render(
            self.partial(self.template, "cluster-table"),
            {
                "form": form,
                "page": paginate(request, clusters),
                "query": query.urlencode(),
                "filtered": filtered,
                "can_create": can_create,
                "needs_project": not can_create
                and selectors.first_project_missing(
                    organization=self.organization, viewer=request.user
                ),
            },
        )


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class CloudFieldsFormView(OrgView):
    """A create page whose form follows its cloud (clusters, jobs, workspaces): when the
    cloud changes, HTMX asks for the #cloud-fields part with that cloud's compute configs
    and images. Subclasses give `template` and `form()`; `context()` adds to the form."""

    template: str

    def form(self, data: Any = None) -> Any:
        raise NotImplementedError

    def context(self, form: Any) -> dict[str, Any]:
        return {"form": form}

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = self.form()
        if request.htmx and request.htmx.target == "cloud-fields":
            return self.render(f"{self.template}#cloud-fields", self.context(form))
        return self.render(self.template, self.context(form))


class ClusterCreateView(CloudFieldsFormView):
    """The form lists only projects the user may create clusters in and clouds those
    projects may use; with no such project the page is refused (403)."""

    permission = "project.list"
    template = "clusters/cluster_create.html"

    def form(self, data: Any = None) -> ClusterCreateForm:
        initial: dict[str, Any] = {}
        if data is None:  # links may preset any field: ?project=<slug>&cloud=<id>…
            get = self.request.GET
            initial = {k: get[k] for k in ClusterCreateForm.base_fields if get.get(k)}
        form = ClusterCreateForm(
            data, organization=self.organization, viewer=self.request.user, initial=initial
        )
        if not form.can_create:
            if selectors.first_project_missing(
                organization=self.organization, viewer=self.request.user
            ):
                raise ProjectMissing
            raise PermissionDenied(
                "Your role lets you look at clusters here, not create them: an owner of a "
                "project can make you a writer in it."
            )
        form.follow_cloud(reverse("cluster_create", args=[self.organization.slug]))
        return form

    def context(self, form: ClusterCreateForm) -> dict[str, Any]:
        return {
            "form": form,
            "can_manage_clouds": has_perm(self.request.user, "cloud.manage", self.organization),
        }

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return super().dispatch(request, *args, **kwargs)
        except ProjectMissing:
            return self.render("clusters/cluster_create.html", {"needs_project": True})

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            with service_errors_on(form):
                cluster = cluster_create(
                    project=data["project"],
                    actor=request.user,
                    name=data["name"],
                    cloud=data["cloud"],
                    compute_config=data["compute_config"],
                    image=data["image"],
                )
                return done(
                    request,
                    reverse("cluster_detail", args=[org_slug, cluster.pk]),
                    f"Cluster {cluster.name} is starting.",
                )
        return self.render(self.template, self.context(form))


# Parts of the cluster page that workloads draw (a job queue): each takes the request and
# the cluster and returns its HTML, or "" when it has nothing to show. Registered from
# AppConfig.ready, drawn in order after the details.
ClusterSection = Callable[[AuthedRequest, Cluster], str]
CLUSTER_SECTIONS: list[ClusterSection] = []


def register_cluster_section(section: ClusterSection) -> None:
    if section not in CLUSTER_SECTIONS:
        CLUSTER_SECTIONS.append(section)


class ClusterObjectView(OrgView):
    """A page of one cluster, reached only through `visible_to` inside the organization
    of the URL. Reading needs "project.view" on the cluster's project."""

    permission = "project.view"
    cluster: Cluster

    def load_objects(self, **kwargs: Any) -> None:
        self.cluster = self.object_or_404(
            self.scoped(Cluster).select_related(
                "project__organization",
                "cloud",
                "compute_config__config",
                "image",
                "created_by",
            ),
            pk=kwargs["cluster_id"],
        )

    def permission_target(self) -> Any:
        return self.cluster

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {
            "cluster": self.cluster,
            "can_update": has_perm(self.request.user, "cluster.update", self.cluster),
        }
        return super().render(template, {**base, **(context or {})}, status)


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class ClusterDetailView(ClusterObjectView):
    template = "clusters/cluster_detail.html"

    def get(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        cluster = self.cluster
        rows = selectors.node_rows(cluster)
        can_access = has_perm(request.user, "cluster.access", cluster)
        live_access = can_access and not cluster.is_final
        job_address = access.gateway_address(cluster) if live_access else None
        now = timezone.now()
        idleness = cluster_idleness(cluster, now)
        apps = (
            [(name, access.APPS[name].label) for name in access.available_apps(cluster)]
            if job_address
            else []
        )
        usage = selectors.cluster_usage(rows)
        gpus = charts.has_gpus(cluster, usage)
        context = {
            "can_access": can_access,
            "job_address": job_address,
            "apps": apps,
            "idleness": idleness,
            "idle_headline": idleness.headline(now),
            "idle_outlook": idleness.outlook(now),
            "nodes": rows,
            "usage": usage,
            "events": selectors.cluster_events(cluster),
            "event_limit": selectors.EVENT_LIMIT,
            "live": not cluster.is_final,
            "stopping": cluster.desired_state == DesiredState.TERMINATED and not cluster.is_final,
            "sections": [html for fn in CLUSTER_SECTIONS if (html := fn(request, cluster))],
            "advice": failure_advice(cluster.state_reason)
            if cluster.state == ClusterState.FAILED
            else "",
            "metrics_unavailable": access.metrics_unavailable(cluster) if can_access else None,
            "apps_available": [name for name, _ in apps],
            "charts": charts.CHARTS + (charts.GPU_CHARTS if gpus else []),
            "gpus": gpus,
        }
        if request.htmx and request.htmx.target == "cluster-live":
            response = self.render(f"{self.template}#cluster-live", context)
            if cluster.state in FINAL_CLUSTER_STATES:
                # Final: polling ends, and the page reloads once so the header, the
                # actions and the last events all show the outcome.
                response["HX-Refresh"] = "true"
            return response
        response = self.render(self.template, context)
        if job_address and context["metrics_unavailable"] is None:
            # The charts fetch Prometheus's data from the gateway itself (its origin).
            response._csp_update = {"connect-src": [job_address]}  # type: ignore[attr-defined]
        return response


class ClusterTerminateView(ClusterObjectView):
    template = "clusters/cluster_terminate.html"

    def get(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        if not has_perm(request.user, "cluster.update", self.cluster):
            raise PermissionDenied("You may not terminate clusters of this project.")
        return self.render(self.template)

    def post(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        url = reverse("cluster_detail", args=[org_slug, self.cluster.pk])
        if self.cluster.is_final:
            messages.info(request, f"{self.cluster.name} is already {self.cluster.state}.")
            return done(request, url)
        cluster_terminate(cluster=self.cluster, actor=request.user)
        return done(request, url, f"Terminating {self.cluster.name}.")


class ClusterKeepRunningView(ClusterObjectView):
    """The banner's "Keep it running": postpones an idle termination, once per run."""

    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        url = reverse("cluster_detail", args=[org_slug, self.cluster.pk])
        try:
            cluster_keep_running(cluster=self.cluster, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return done(request, url)
        return done(request, url, f"{self.cluster.name} keeps running.")


class ClusterRestartView(ClusterObjectView):
    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        url = reverse("cluster_detail", args=[org_slug, self.cluster.pk])
        try:
            cluster_restart(cluster=self.cluster, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return done(request, url)
        return done(request, url, f"Restarting {self.cluster.name}.")


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class NodeLogView(ClusterObjectView):
    """The last lines a node's agent sent: a partial for the cluster page, or a page."""

    template = "clusters/node_log.html"

    def load_objects(self, **kwargs: Any) -> None:
        super().load_objects(**kwargs)
        self.node = get_object_or_404(
            Node.objects.filter(cluster=self.cluster).defer(
                "bootstrap_token_hash", "credential_hash"
            ),
            pk=kwargs["node_id"],
        )

    def get(
        self, request: AuthedRequest, org_slug: str, cluster_id: int, node_id: int
    ) -> HttpResponse:
        form = NodeLogFilterForm(request.GET)
        log = selectors.node_log(self.node, **form.filters())
        return self.render(
            self.partial(self.template, "node-log"),
            {"node": self.node, "form": form, "log": log, "query": request.GET.urlencode()},
        )


class NodeLogDownloadView(NodeLogView):
    """The node's log lines as a text file, filtered as the page shows them."""

    def get(
        self, request: AuthedRequest, org_slug: str, cluster_id: int, node_id: int
    ) -> HttpResponse:
        filters = NodeLogFilterForm(request.GET).filters()
        log = selectors.node_log(self.node, **filters)
        source = filters.get("source") or "all"
        response = HttpResponse(
            "".join(f"{line.text}\n" for line in log.lines),
            content_type="text/plain; charset=utf-8",
        )
        name = f"{self.node.get_role_display().lower()}-{str(self.node.uuid)[:8]}-{source}.log"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class ClusterOpenView(ClusterObjectView):
    """A "Ray Dashboard" / "Jupyter" / "Grafana" button: audit the opening, mint a
    5-minute token and send the browser to the gateway with it. A POST, so no page
    elsewhere can make someone's browser open it. The answer is a page that moves on at
    once (meta refresh) rather than a 303: the console's CSP (form-action 'self') would
    block a form's redirect to the gateway's origin."""

    permission = "cluster.access"
    http_method_names = ["post"]
    template = "clusters/cluster_open.html"

    def post(
        self, request: AuthedRequest, org_slug: str, cluster_id: int, app: str
    ) -> HttpResponse:
        try:
            url = access.open_app(user=request.user, cluster=self.cluster, app=app)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect(reverse("cluster_detail", args=[org_slug, self.cluster.pk]))
        response = self.render(self.template, {"url": url, "app": access.APPS[app].label})
        response["Referrer-Policy"] = "no-referrer"  # the token stays out of Referer headers
        response["Cache-Control"] = "no-store"
        return response


class ClusterTokenView(ClusterObjectView):
    """A token for tools (`ray job submit`), shown once with the exact command."""

    permission = "cluster.access"
    http_method_names = ["post"]
    template = "clusters/cluster_token.html"

    def post(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        try:
            address = access.cluster_address(request.user, self.cluster)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect(reverse("cluster_detail", args=[org_slug, self.cluster.pk]))
        command = access.submit_command(address["job_address"], address["token"])
        response = self.render(self.template, {"address": address, "command": command})
        response["Cache-Control"] = "no-store"
        return response


class ClusterMetricsTokenView(ClusterObjectView):
    """The cluster page's charts ask here for a short-lived token and the gateway URL of
    Prometheus's range queries, then fetch the data from the gateway themselves. A POST
    (with the page's CSRF token), so no other site can have a token minted."""

    permission = "cluster.access"
    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        try:
            answer = access.metrics_access(user=request.user, cluster=self.cluster)
        except ValidationError as exc:
            answer, status = {"unavailable": " ".join(exc.messages)}, 409
        else:
            status = 200
        response = JsonResponse(answer, status=status)
        response["Cache-Control"] = "no-store"
        return response


class ClusterRevokeAccessView(ClusterObjectView):
    """Refuse every token and browser session of the cluster handed out until now."""

    permission = "cluster.update"
    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, cluster_id: int) -> HttpResponse:
        access.cluster_access_revoke_all(cluster=self.cluster, actor=request.user)
        return done(
            request,
            reverse("cluster_detail", args=[org_slug, self.cluster.pk]),
            "Every link and token handed out for this cluster so far stops working within seconds.",
        )


# --- Compute configs ---------------------------------------------------------------------


class ComputeConfigListView(OrgView):
    permission = "project.list"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        page = paginate(
            request,
            selectors.compute_config_list(organization=self.organization, viewer=request.user),
        )
        return self.render(
            "clusters/compute_config_list.html",
            {
                "page": page,
                "rows": selectors.config_rows(page.object_list),
                "can_create": selectors.may_manage_compute_configs(
                    organization=self.organization, viewer=request.user
                ),
            },
        )


class ComputeConfigCreateView(OrgFormView):
    """Only projects where the user may manage configs are offered (and "Organization-
    wide" only to those who may manage the organization's); with neither, 403."""

    permission = "project.list"
    template = "clusters/compute_config_form.html"

    def load_objects(self, **kwargs: Any) -> None:
        if not selectors.may_manage_compute_configs(
            organization=self.organization, viewer=self.request.user
        ):
            raise PermissionDenied("You may not manage compute configs in any project here.")

    def form(self, data: Any = None) -> ComputeConfigForm:
        return ComputeConfigForm(data, organization=self.organization, viewer=self.request.user)

    def submitted(self, form: ComputeConfigForm) -> HttpResponse:  # type: ignore[override]
        config = compute_config_create(
            organization=self.organization, actor=self.request.user, **form.service_fields()
        )
        return done(
            self.request,
            reverse("compute_config_detail", args=[self.organization.slug, config.pk]),
            f"Compute config {config.name} created (version 1).",
        )


class ComputeConfigObjectView(OrgView):
    """A page of one compute config, reached only through `visible_to` inside the
    organization of the URL (another organization's is a 404)."""

    config: ComputeConfig
    latest: ComputeConfigVersion

    def load_objects(self, **kwargs: Any) -> None:
        self.config = self.object_or_404(
            self.scoped(ComputeConfig).select_related("project", "created_by"),
            pk=kwargs["config_id"],
        )
        latest = selectors.compute_config_versions(self.config).first()
        if latest is None:  # every config is created with its version 1
            raise Http404("No such compute config.")
        self.latest = latest

    def permission_target(self) -> Any:
        return self.config

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {"config": self.config, "latest": self.latest}
        return super().render(template, {**base, **(context or {})}, status)


class ComputeConfigDetailView(ComputeConfigObjectView):
    permission = "project.list"

    def get(self, request: AuthedRequest, org_slug: str, config_id: int) -> HttpResponse:
        versions = paginate(request, selectors.compute_config_versions(self.config))
        clusters = selectors.clusters_using_config(
            config=self.config, organization=self.organization, viewer=request.user
        )
        cluster_limit = settings.RAYDECK_PAGE_SIZE
        return self.render(
            "clusters/compute_config_detail.html",
            {
                "versions": versions,
                "version_rows": selectors.version_rows(self.config, versions.object_list),
                "clusters": clusters[:cluster_limit],
                "cluster_count": clusters.count(),
                "cluster_limit": cluster_limit,
                "can_manage": has_perm(request.user, "compute_config.manage", self.config),
            },
        )


class ComputeConfigEditView(ComputeConfigObjectView):
    """Saving makes the next version; clusters keep the version they were created with."""

    permission = "compute_config.manage"
    template = "clusters/compute_config_form.html"

    def form(self, data: Any = None) -> ComputeConfigForm:
        return ComputeConfigForm(
            data, organization=self.organization, viewer=self.request.user, version=self.latest
        )

    def get(self, request: AuthedRequest, org_slug: str, config_id: int) -> HttpResponse:
        return self.render(self.template, {"form": self.form()})

    def post(self, request: AuthedRequest, org_slug: str, config_id: int) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                version = compute_config_update(
                    config=self.config, actor=request.user, **form.service_fields()
                )
                url = reverse("compute_config_detail", args=[org_slug, self.config.pk])
                if version.pk == self.latest.pk:
                    messages.info(request, f"Nothing changed: still version {version.number}.")
                    return done(request, url)
                return done(
                    request,
                    url,
                    f"Saved as version {version.number}. Clusters created earlier keep "
                    "the version they started with.",
                )
        return self.render(self.template, {"form": form})


# --- Images --------------------------------------------------------------------------------


class ImageListView(OrgListView):
    """The organization's own images, then the built-in ones."""

    permission = "project.list"
    manage_permission = "image.manage"
    template = "clusters/image_list.html"

    def rows(self) -> QuerySet[ContainerImage]:
        return selectors.image_list(organization=self.organization, viewer=self.request.user)


class ImageCreateView(OrgFormView):
    permission = "image.manage"
    template = "clusters/image_form.html"
    form_class = ImageForm

    def submitted(self, form: ImageForm) -> HttpResponse:  # type: ignore[override]
        image = image_create(
            organization=self.organization, actor=self.request.user, **form.service_fields()
        )
        return done(
            self.request,
            reverse("image_list", args=[self.organization.slug]),
            f"Image {image.name} created.",
        )


class ImageObjectView(OrgView):
    """One of the organization's own images (a built-in one, or another organization's,
    is a 404 here: nobody edits or deletes those)."""

    permission = "image.manage"
    image: ContainerImage

    def load_objects(self, **kwargs: Any) -> None:
        self.image = self.object_or_404(
            self.scoped(ContainerImage).filter(organization=self.organization),
            pk=kwargs["image_id"],
        )

    def permission_target(self) -> Any:
        return self.image

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {"image": self.image, "live": live_clusters_using(self.image)}
        return super().render(template, {**base, **(context or {})}, status)


class ImageEditView(ImageObjectView):
    template = "clusters/image_form.html"

    def get(self, request: AuthedRequest, org_slug: str, image_id: int) -> HttpResponse:
        return self.render(self.template, {"form": ImageForm(image=self.image)})

    def post(self, request: AuthedRequest, org_slug: str, image_id: int) -> HttpResponse:
        form = ImageForm(request.POST, image=self.image)
        if form.is_valid():
            with service_errors_on(form):
                image = image_update(image=self.image, actor=request.user, **form.service_fields())
                return done(request, reverse("image_list", args=[org_slug]), f"{image.name} saved.")
        return self.render(self.template, {"form": form})


class ImageDeleteView(ImageObjectView):
    template = "clusters/image_delete.html"

    def get(self, request: AuthedRequest, org_slug: str, image_id: int) -> HttpResponse:
        return self.render(self.template)

    def post(self, request: AuthedRequest, org_slug: str, image_id: int) -> HttpResponse:
        try:
            image_delete(image=self.image, actor=request.user)
        except ValidationError as exc:
            return self.render(self.template, {"error": " ".join(exc.messages)}, status=409)
        return done(
            request, reverse("image_list", args=[org_slug]), f"Image {self.image.name} deleted."
        )


class CertificateAuthorityView(OrgView):
    """How to trust the clusters' gateways: the installation's CA, with instructions for
    browsers and tools; `?download=1` gives the PEM file itself."""

    template = "clusters/certificate_authority.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        pem = certificates.trust_bundle_pem()
        if request.GET.get("download"):
            response = HttpResponse(pem, content_type="application/x-pem-file")
            response["Content-Disposition"] = 'attachment; filename="raydeck-ca.pem"'
            return response
        return self.render(self.template, {"pem": pem, "sha256": certificates.bundle_sha256(pem)})
