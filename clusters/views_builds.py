"""Image build pages: New image → Build (the spec form), the builds list, one build's
page with its live log (HTMX, by itself, until the build is final; then the last lines
and the failed step), and cancel (with a confirmation)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling

from accounts.permissions import has_perm
from accounts.views.base import OrgFormView, OrgListView, OrgView
from kit.types import AuthedRequest
from kit.views import done

from . import selectors
from .forms import ImageBuildForm
from .models import ImageBuild
from .services.builds import image_build_cancel, image_build_start


class ImageBuildListView(OrgListView):
    template = "clusters/image_build_list.html"
    manage_permission = "image.manage"

    def rows(self) -> QuerySet[ImageBuild]:
        return selectors.image_builds(organization=self.organization, viewer=self.request.user)


class ImageBuildCreateView(OrgFormView):
    permission = "image.manage"
    template = "clusters/image_build_form.html"
    form_class = ImageBuildForm

    def form(self, data: Any = None) -> ImageBuildForm:
        return ImageBuildForm(data, organization=self.organization, viewer=self.request.user)

    def submitted(self, form: ImageBuildForm) -> HttpResponse:  # type: ignore[override]
        build = image_build_start(
            organization=self.organization,
            actor=self.request.user,
            cloud=form.cleaned_data["cloud"],
            name=form.cleaned_data["name"],
            spec=form.spec(),
        )
        url = reverse("image_build_detail", args=[self.organization.slug, build.pk])
        return done(self.request, url, f"Build of {build.name} started.")


class ImageBuildObjectView(OrgView):
    build: ImageBuild

    def load_objects(self, **kwargs: Any) -> None:
        self.build = self.object_or_404(
            selectors.image_builds(organization=self.organization, viewer=self.request.user),
            pk=kwargs["build_id"],
        )


@method_decorator(vary_on_headers("HX-Request"), name="dispatch")
class ImageBuildDetailView(ImageBuildObjectView):
    template = "clusters/image_build_detail.html"

    def get(self, request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        build = self.build
        if request.htmx and request.htmx.target == "build-live" and build.is_final:
            response = HttpResponseStopPolling()
            response["HX-Refresh"] = "true"  # the page shows the outcome whole
            return response
        context = {
            "build": build,
            "can_manage": has_perm(request.user, "image.manage", self.organization),
        }
        return self.render(self.partial(self.template, "build-live"), context)


class ImageBuildCancelView(ImageBuildObjectView):
    permission = "image.manage"
    template = "clusters/image_build_cancel.html"

    def get(self, request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.render(self.template, {"build": self.build})

    def post(self, request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        url = reverse("image_build_detail", args=[self.organization.slug, self.build.pk])
        try:
            image_build_cancel(build=self.build, actor=request.user)
        except ValidationError as exc:  # it finished meanwhile
            messages.error(request, " ".join(exc.messages))
            return done(request, url)
        return done(request, url, "Build cancelled.")
