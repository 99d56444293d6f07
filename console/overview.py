"""The organization's overview (/o/<org>/, where `/` leads): what runs now, what failed
lately, and for a new organization its first steps, each marked when done.

Each part is a section: a function of (organization, viewer) that returns the template
to include and its context, or None when it has nothing to show. A workload adds its
own part (jobs running, services up) by writing such a function beside its selectors and
adding one line to SECTIONS; the page draws them in this order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from accounts.models import Organization, User
from accounts.permissions import has_perm
from clusters import selectors as cluster_selectors


@dataclass(frozen=True)
class Section:
    template: str
    context: dict[str, Any] = field(default_factory=dict)


SectionFn = Callable[[Organization, User], "Section | None"]


def first_steps(organization: Organization, viewer: User) -> Section | None:
    """Connect a cloud, create a project, create a cluster: shown until all are done."""
    done = cluster_selectors.first_steps_done(organization=organization, viewer=viewer)
    if all(done.values()):
        return None
    return Section(
        "console/overview/_first_steps.html",
        {
            "done": done,
            "can_manage_clouds": has_perm(viewer, "cloud.manage", organization),
            "can_create_project": has_perm(viewer, "project.create", organization),
        },
    )


def clusters_now(organization: Organization, viewer: User) -> Section | None:
    clusters = cluster_selectors.clusters_running_now(organization=organization, viewer=viewer)
    return Section("console/overview/_clusters.html", {"clusters": clusters})


def recent_failures(organization: Organization, viewer: User) -> Section | None:
    failures = cluster_selectors.recent_cluster_failures(organization=organization, viewer=viewer)
    if not failures:
        return None
    return Section("console/overview/_failures.html", {"failures": failures})


SECTIONS: list[SectionFn] = [first_steps, clusters_now, recent_failures]


def overview(organization: Organization, viewer: User) -> list[Section]:
    return [s for s in (fn(organization, viewer) for fn in SECTIONS) if s is not None]
