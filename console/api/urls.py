"""/api/v1's URLs, and the interactive reference page (Swagger UI, vendored under
static/vendor/swagger-ui). The endpoints (console/api/endpoints.py: ninja, the
operations' pydantic models) load with the API's first request, not with the process:
these patterns declare each route and name so that Django's URL maps and `reverse`
need none of it. tests/api/test_api.py checks ROUTES against ninja's own patterns and
prints the lines to paste when an endpoint is added."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from kit.lazy_views import LazyView

# ninja's (app name, namespace) of the API's patterns.
APP_NAME, NAMESPACE = "ninja", "api-v1"

# (route, name) of every pattern ninja builds for the routers, in its order: one per
# operation, so a route with several methods comes once per method.
ROUTES = (
    ("me", "me"),
    ("orgs", "org_list"),
    ("orgs/<org>", "org_get"),
    ("orgs/<org>/members", "member_list"),
    ("orgs/<org>/projects", "project_list"),
    ("orgs/<org>/projects", "project_create"),
    ("orgs/<org>/projects/<project>", "project_get"),
    ("orgs/<org>/audit-events", "audit_event_list"),
    ("orgs/<org>/tokens", "token_list"),
    ("orgs/<org>/tokens", "token_create"),
    ("orgs/<org>/tokens/<id>", "token_revoke"),
    ("orgs/<org>/clouds", "cloud_list"),
    ("orgs/<org>/clouds", "cloud_create_endpoint"),
    ("orgs/<org>/clouds/<id>", "cloud_get"),
    ("orgs/<org>/clouds/<id>", "cloud_update_endpoint"),
    ("orgs/<org>/clouds/<id>", "cloud_delete_endpoint"),
    ("orgs/<org>/clouds/<id>/verify", "cloud_verify_endpoint"),
    ("orgs/<org>/default-cloud", "org_default_cloud_get"),
    ("orgs/<org>/default-cloud", "org_default_cloud_set"),
    ("orgs/<org>/projects/<project>/default-cloud", "project_default_cloud_get"),
    ("orgs/<org>/projects/<project>/default-cloud", "project_default_cloud_set"),
    ("orgs/<org>/compute-configs", "compute_config_list"),
    ("orgs/<org>/compute-configs", "compute_config_create_endpoint"),
    ("orgs/<org>/compute-configs/<id>", "compute_config_get"),
    ("orgs/<org>/compute-configs/<id>", "compute_config_update_endpoint"),
    ("orgs/<org>/images", "image_list"),
    ("orgs/<org>/images", "image_create_endpoint"),
    ("orgs/<org>/images/<id>", "image_get"),
    ("orgs/<org>/images/<id>", "image_update_endpoint"),
    ("orgs/<org>/images/<id>", "image_delete_endpoint"),
    ("orgs/<org>/clusters", "cluster_list"),
    ("orgs/<org>/clusters", "cluster_create_endpoint"),
    ("orgs/<org>/clusters/<id>", "cluster_get"),
    ("orgs/<org>/clusters/<id>/terminate", "cluster_terminate_endpoint"),
    ("orgs/<org>/clusters/<id>/events", "cluster_event_list"),
    ("orgs/<org>/clusters/<id>/nodes", "cluster_node_list"),
    ("orgs/<org>/clusters/<id>/logs", "cluster_logs"),
    ("orgs/<org>/clusters/<id>/address", "cluster_address_endpoint"),
    ("ca", "certificate_authority"),
    ("orgs/<org>/working-dirs", "working_dir_upload"),
    ("orgs/<org>/jobs", "job_list"),
    ("orgs/<org>/jobs", "job_submit_endpoint"),
    ("orgs/<org>/jobs/<id>", "job_get"),
    ("orgs/<org>/jobs/<id>/stop", "job_stop_endpoint"),
    ("orgs/<org>/jobs/<id>/attempts", "job_attempt_list"),
    ("orgs/<org>/jobs/<id>/events", "job_event_list"),
    ("orgs/<org>/jobs/<id>/logs", "job_log_read"),
    ("orgs/<org>/clusters/<id>/queue", "cluster_queue_get"),
    ("orgs/<org>/clusters/<id>/queue", "cluster_queue_update"),
    ("orgs/<org>/job-schedules", "schedule_list"),
    ("orgs/<org>/job-schedules", "schedule_create_endpoint"),
    ("orgs/<org>/job-schedules/<id>", "schedule_get"),
    ("orgs/<org>/job-schedules/<id>", "schedule_delete_endpoint"),
    ("orgs/<org>/job-schedules/<id>/pause", "schedule_pause_endpoint"),
    ("orgs/<org>/job-schedules/<id>/resume", "schedule_resume_endpoint"),
    ("orgs/<org>/workspaces", "workspace_list"),
    ("orgs/<org>/workspaces", "workspace_create_endpoint"),
    ("orgs/<org>/workspaces/<id>", "workspace_get"),
    ("orgs/<org>/workspaces/<id>", "workspace_update_endpoint"),
    ("orgs/<org>/workspaces/<id>", "workspace_delete_endpoint"),
    ("orgs/<org>/workspaces/<id>/start", "workspace_start_endpoint"),
    ("orgs/<org>/workspaces/<id>/stop", "workspace_stop_endpoint"),
    ("orgs/<org>/workspaces/<id>/jupyter", "workspace_jupyter"),
    ("orgs/<org>/workspaces/<id>/ssh", "workspace_ssh"),
    ("orgs/<org>/workspaces/<id>/jobs", "workspace_job"),
    ("orgs/<org>/services", "service_list"),
    ("orgs/<org>/services", "service_deploy_endpoint"),
    ("orgs/<org>/services/<id>", "service_get"),
    ("orgs/<org>/services/<id>/versions", "service_versions"),
    ("orgs/<org>/services/<id>/events", "service_event_list"),
    ("orgs/<org>/services/<id>/metrics", "service_metrics"),
    ("orgs/<org>/services/<id>/traffic", "service_traffic_endpoint"),
    ("orgs/<org>/services/<id>/rollback", "service_rollback_endpoint"),
    ("orgs/<org>/services/<id>/terminate", "service_terminate_endpoint"),
    ("orgs/<org>/services/<id>/tokens", "service_token_endpoint"),
    ("orgs/<org>/image-builds", "image_build_list"),
    ("orgs/<org>/image-builds", "image_build_create"),
    ("orgs/<org>/image-builds/<id>", "image_build_get"),
    ("orgs/<org>/image-builds/<id>/log", "image_build_log"),
    ("orgs/<org>/image-builds/<id>/cancel", "image_build_cancel_endpoint"),
)


@login_not_required
@csrf_exempt  # GET only: nothing to forge (so a POST is a plain 405)
@require_GET
def docs(request: HttpRequest) -> HttpResponse:
    return render(request, "api/docs.html")


def _endpoint(route: str, name: str) -> URLPattern:
    return path(route, LazyView("console.api.endpoints.views", route), name=name)


urlpatterns = [
    path("docs", docs, name="api_docs"),
    path("openapi.json", LazyView("console.api.endpoints.openapi_json"), name="api_openapi"),
    path("", ([_endpoint(route, name) for route, name in ROUTES], APP_NAME, NAMESPACE)),
]
