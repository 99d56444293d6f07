"""The image a workspace gets when its image is left blank.

Where the kind's built-in image lacks what a workspace's head runs (JupyterLab, sshd:
AWS and GCP run Ray's own image), the workspace gets Raydeck's workspace image for its
cloud instead: the kind's `workspace_image_spec`, built with the ordinary image builds
on first use per organization and cloud, reused by later workspaces, and made again for
a new Ray version (its name and spec hash carry the version). While the build runs the
workspace holds the build, not an image; start takes the image once it is built.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import Organization, User
from clouds.models import Cloud
from clouds.providers.registry import traits_for
from clusters.choices import BuildState
from clusters.image_specs import normalize_spec, spec_hash
from clusters.models import ContainerImage, ImageBuild
from clusters.services.builds import image_build_queue
from clusters.services.defaults import ray_version


def workspace_image_name(*, cloud: Cloud, ray: str) -> str:
    return f"Workspace (Ray {ray}) on {cloud.name}"[:100]


@transaction.atomic
def default_workspace_image(
    *, organization: Organization, cloud: Cloud, actor: User
) -> tuple[ContainerImage | None, ImageBuild | None]:
    """(image, None) when the kind's built-in image serves workspaces (None, None) or
    the workspace image of `cloud` is built; (None, build) while its build runs. Starts
    the build when there is none (or only failed ones). The caller checked
    workspace.manage: that is enough to have this one image built."""
    raw_spec = traits_for(cloud.kind).workspace_image_spec()
    if raw_spec is None:
        return None, None
    # One first use at a time per cloud: two workspaces created together share one build.
    Cloud.objects.select_for_update().filter(pk=cloud.pk).first()
    ray = ray_version()
    name = workspace_image_name(cloud=cloud, ray=ray)
    spec = normalize_spec(raw_spec)
    latest = (
        ImageBuild.objects.filter(
            organization=organization,
            cloud=cloud,
            name=name,
            spec_hash=spec_hash(spec, ray_version=ray),
        )
        .exclude(state__in=(BuildState.FAILED, BuildState.CANCELLED))
        .select_related("image")
        .order_by("-pk")
        .first()
    )
    if latest is not None and not latest.is_final:
        return None, latest
    if latest is not None and latest.image is not None and latest.image.deleted_at is None:
        return latest.image, None
    try:
        build = image_build_queue(
            organization=organization, actor=actor, cloud=cloud, name=name, spec=spec
        )
    except ValidationError as exc:  # said on the workspace's own field, not the build's
        raise ValidationError(
            {
                "image": f"Raydeck's workspace image cannot be built on {cloud.name} "
                f"({' '.join(exc.messages)}). Choose an image."
            }
        ) from exc
    if build.state == BuildState.SUCCEEDED:  # an identical build was reused at once
        return build.image, None
    return None, build
