"""An organization's own images: create, change and delete them. Raydeck's built-in
images (no organization) are never changed here.

What nodes boot is read when they launch, so an image that live clusters use keeps
what it runs (new workers must match their head); only its name may change. Deleting
one that ended clusters still name keeps the row, hidden (`deleted_at`), so their pages
still say what they ran; one nothing ever used is deleted outright."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from accounts.audit import audit, changes_between
from accounts.models import Organization, User
from accounts.permissions import require

from ..models import Cluster, ContainerImage

# What a user may set, in the order forms show it.
IMAGE_FIELDS = ("name", "image_uri", "python_executable", "ray_version", "aws_amis", "gcp_image")
# What the nodes boot and run: fixed while a live cluster uses the image.
BOOT_FIELDS = tuple(f for f in IMAGE_FIELDS if f != "name")

LABELS = {
    "name": "name",
    "image_uri": "image URI",
    "python_executable": "Python executable",
    "ray_version": "Ray version",
    "aws_amis": "AWS AMIs",
    "gcp_image": "GCP boot image",
}
BUILT_IN = "Raydeck's built-in images cannot be changed or deleted; create an image of your own."


def _require_own(image: ContainerImage, actor: User) -> None:
    if image.organization_id is None:
        raise PermissionDenied(BUILT_IN)
    require(actor, "image.manage", image)


def _values(image: ContainerImage) -> dict[str, Any]:
    return {name: getattr(image, name) for name in IMAGE_FIELDS}


def _save(image: ContainerImage, update_fields: list[str] | None = None) -> None:
    """full_clean, then save; a name taken in the organization is a message on `name`."""
    image.full_clean(exclude=["organization"], validate_constraints=False)
    try:
        with transaction.atomic():
            image.save(update_fields=update_fields)
    except IntegrityError as exc:
        raise ValidationError(
            {"name": f"An image named {image.name} already exists in this organization."}
        ) from exc


def live_clusters_using(image: ContainerImage) -> int:
    return Cluster.objects.filter(image=image).live().count()


# Not durable: the API's Idempotency-Key row commits in the same transaction.
@transaction.atomic
def image_create(
    *,
    organization: Organization,
    actor: User,
    name: str,
    ray_version: str,
    image_uri: str = "",
    python_executable: str = "",
    aws_amis: dict[str, str] | None = None,
    gcp_image: str = "",
) -> ContainerImage:
    """A new image of the organization (image.manage: owners and admins)."""
    require(actor, "image.manage", organization)
    image = ContainerImage(
        organization=organization,
        name=name.strip(),
        ray_version=ray_version.strip(),
        image_uri=image_uri.strip(),
        python_executable=python_executable.strip(),
        aws_amis=aws_amis or {},
        gcp_image=gcp_image.strip(),
    )
    _save(image)
    audit(
        actor=actor,
        verb="image.create",
        target=image,
        changes={k: [None, v] for k, v in _values(image).items() if v},
    )
    return image


@transaction.atomic(durable=True)
def image_update(*, image: ContainerImage, actor: User, **changes: Any) -> ContainerImage:
    """Change the image's fields in `changes` (any of IMAGE_FIELDS). What nodes boot
    cannot change while a cluster that is not terminated or failed uses the image."""
    _require_own(image, actor)
    unknown = set(changes) - set(IMAGE_FIELDS)
    if unknown:
        raise ValueError(f"Not an image setting: {', '.join(sorted(unknown))}")
    image = ContainerImage.objects.select_for_update().get(pk=image.pk)
    if image.deleted_at is not None:
        raise ValidationError("This image was deleted.")
    before = _values(image)
    for name, value in changes.items():
        setattr(image, name, value.strip() if isinstance(value, str) else value)
    if image.aws_amis is None:
        image.aws_amis = {}
    changed = changes_between(before, _values(image))
    if not changed:
        return image
    booted = [name for name in changed if name in BOOT_FIELDS]
    live = live_clusters_using(image) if booted else 0
    if live:
        labels = ", ".join(LABELS[name] for name in booted)
        raise ValidationError(
            f"{live} cluster(s) that are not terminated use {before['name']}, so what it "
            f"runs cannot change (here: {labels}): their new workers must match their head. "
            "Create a new image for new clusters, or terminate those clusters first."
        )
    _save(image, update_fields=list(changed))
    audit(actor=actor, verb="image.update", target=image, changes=changed)
    return image


@transaction.atomic(durable=True)
def image_delete(*, image: ContainerImage, actor: User) -> None:
    """Delete the image, unless a cluster that is not terminated or failed uses it.
    Ended clusters, and the workloads that name it, keep it (hidden from everything
    else)."""
    _require_own(image, actor)
    image = ContainerImage.objects.select_for_update().get(pk=image.pk)
    if image.deleted_at is not None:
        return
    live = live_clusters_using(image)
    if live:
        raise ValidationError(
            f"{live} cluster(s) that are not terminated use {image.name}. Terminate them "
            "first; then the image can be deleted."
        )
    audit(actor=actor, verb="image.delete", target=image, changes={"name": [image.name, None]})
    if not Cluster.objects.filter(image=image).exists():
        try:
            with transaction.atomic():
                image.delete()
            return
        except ProtectedError:  # a job, schedule, workspace or service names it
            pass
    image.deleted_at = timezone.now()
    image.save(update_fields=["deleted_at"])
