"""Services' pages: the list, deploy, the live service page (endpoint, versions and
weights, the rollout step by step, charts, events), its metrics as JSON for the charts,
and the traffic, rollback and terminate actions (the last two after a confirmation)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers

from accounts.permissions import has_perm
from accounts.views.base import OrgView
from clouds.providers.haproxy import INSTALL_HINT
from kit.forms import service_errors_on
from kit.types import AuthedRequest
from kit.views import done, paginate

from . import selectors
from .forms import ServiceDeployForm, TrafficForm
from .models import Service
from .services import deploy


class ServiceListView(OrgView):
    permission = "project.list"
    template = "serve/service_list.html"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        services = selectors.services_for(request.user, self.organization)
        if not request.GET.get("all"):
            services = services.live()
        return self.render(
            self.template,
            {
                "page": paginate(request, services),
                "show_all": bool(request.GET.get("all")),
                "query_extra": "all=1" if request.GET.get("all") else "",
                "can_deploy": any(
                    has_perm(request.user, "service.manage", project)
                    for project in selectors.projects_for_deploy(request.user, self.organization)
                ),
            },
        )


class ServiceDeployView(OrgView):
    permission = "project.list"
    template = "serve/service_deploy.html"

    def form(self, data: Any = None) -> ServiceDeployForm:
        return ServiceDeployForm(data, organization=self.organization, viewer=self.request.user)

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        return self.render(self.template, {"form": self.form(), "haproxy_hint": INSTALL_HINT})

    def post(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        form = self.form(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            if not has_perm(request.user, "service.manage", data["project"]):
                raise PermissionDenied("You may not deploy services in this project.")
            with service_errors_on(form):
                deployed = deploy.service_deploy(
                    project=data["project"],
                    actor=request.user,
                    name=data["name"],
                    serve_config=data["serve_config"],
                    cloud=data["cloud"],
                    compute_config=data["compute_config"],
                    canary_steps=data["canary_steps"],
                    step_seconds=data["step_seconds"],
                )
                url = reverse("services_detail", args=[org_slug, deployed.service.pk])
                if deployed.token is None:
                    return done(
                        request,
                        url,
                        f"v{deployed.version.number} of {deployed.service.name} is rolling out.",
                    )
                # The token is shown here, once: never in a URL, a message or a log.
                return self.render(
                    "serve/service_created.html",
                    {"service": deployed.service, "token": deployed.token, "service_url": url},
                )
        return self.render(self.template, {"form": form, "haproxy_hint": INSTALL_HINT})


class ServiceObjectView(OrgView):
    permission = "project.view"
    service: Service

    def load_objects(self, **kwargs: Any) -> None:
        self.service = self.object_or_404(
            self.scoped(Service).select_related("project", "cloud", "current_version"),
            pk=kwargs["service_id"],
        )

    def permission_target(self) -> Any:
        return self.service.project

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {
            "service": self.service,
            "can_manage": has_perm(self.request.user, "service.manage", self.service.project),
        }
        return super().render(template, {**base, **(context or {})}, status)

    def require_manage(self) -> None:
        if not has_perm(self.request.user, "service.manage", self.service.project):
            raise PermissionDenied("You may not change services of this project.")


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class ServiceDetailView(ServiceObjectView):
    template = "serve/service_detail.html"

    def get(self, request: AuthedRequest, org_slug: str, service_id: int) -> HttpResponse:
        service = self.service
        context = {
            "versions": selectors.version_rows(service),
            "rollout": selectors.rollout_progress(service),
            "events": list(selectors.service_events(service).order_by("-pk")[:50]),
            "live": not service.is_final,
            "traffic_form": TrafficForm(initial={"canary": service.pinned_weight}),
        }
        if request.htmx and request.htmx.target == "service-live":
            # The endpoint card comes along: it changes when the endpoint is created
            # or removed, outside the live panel.
            return self.render(f"{self.template}#service-live", {**context, "oob": True})
        return self.render(self.template, context)


class ServiceMetricsView(ServiceObjectView):
    """The charts' data: per version, request rate, error rate and p50/p99 over time."""

    def get(self, request: AuthedRequest, org_slug: str, service_id: int) -> HttpResponse:
        return JsonResponse({"versions": selectors.version_series(self.service)})


class ServiceTrafficView(ServiceObjectView):
    http_method_names = ["post"]

    def post(self, request: AuthedRequest, org_slug: str, service_id: int) -> HttpResponse:
        self.require_manage()
        url = reverse("services_detail", args=[org_slug, self.service.pk])
        form = TrafficForm(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                deploy.service_set_traffic(
                    service=self.service, actor=request.user, canary=form.cleaned_data["canary"]
                )
                return done(request, url, "Traffic updated.")
        messages.error(request, " ".join(str(e) for errs in form.errors.values() for e in errs))
        return done(request, url)


class ServiceConfirmView(ServiceObjectView):
    """A destructive action after a confirmation page (GET shows it, POST does it)."""

    template = "serve/service_confirm.html"
    action: str
    heading: str
    explanation: str
    button: str

    def get(self, request: AuthedRequest, org_slug: str, service_id: int) -> HttpResponse:
        self.require_manage()
        return self.render(
            self.template,
            {
                "action": self.action,
                "heading": self.heading.format(name=self.service.name),
                "explanation": self.explanation,
                "button": self.button,
            },
        )

    def post(self, request: AuthedRequest, org_slug: str, service_id: int) -> HttpResponse:
        self.require_manage()
        url = reverse("services_detail", args=[org_slug, self.service.pk])
        try:
            message = self.act(request)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return done(request, url)
        return done(request, url, message)

    def act(self, request: AuthedRequest) -> str:
        raise NotImplementedError


class ServiceRollbackView(ServiceConfirmView):
    action = "rollback"
    heading = "Roll back {name}?"
    explanation = (
        "A rollout under way stops: the serving version takes all the traffic back and the "
        "new one drains and stops. With none under way, the previous version's config is "
        "deployed again as a new version and rolls out step by step."
    )
    button = "Roll back"

    def act(self, request: AuthedRequest) -> str:
        deploy.service_rollback(service=self.service, actor=request.user)
        return f"Rolling {self.service.name} back."


class ServiceTerminateView(ServiceConfirmView):
    action = "terminate"
    heading = "Terminate {name}?"
    explanation = (
        "Every version stops, their clusters are terminated and the endpoint is removed: "
        "requests to it fail from then on. Its query tokens stop working."
    )
    button = "Terminate service"

    def act(self, request: AuthedRequest) -> str:
        deploy.service_terminate(service=self.service, actor=request.user)
        return f"Terminating {self.service.name}."
