"""factory_boy factories for the accounts, clouds and clusters models. Users come with a
verified email, as they would after sign-up."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import factory
from allauth.account.models import EmailAddress
from django.utils import timezone

from accounts.choices import OrgRole, ProjectRole
from accounts.models import (
    ApiToken,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMembership,
    ServiceAccount,
    SsoConnection,
    SsoGroupMapping,
    User,
)
from accounts.tokens import display_prefix, hash_secret, new_secret
from clouds.choices import CloudKind
from clouds.models import Cloud
from clusters.choices import NodeRole
from clusters.models import Cluster, ComputeConfig, ComputeConfigVersion, ContainerImage, Node

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    password = factory.django.Password(PASSWORD)

    @factory.post_generation
    def verified_email(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            EmailAddress.objects.create(user=self, email=self.email, verified=True, primary=True)


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = OrgRole.MEMBER


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")


class ProjectMembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProjectMembership

    project = factory.SubFactory(ProjectFactory)
    organization = factory.SelfAttribute("project.organization")
    user = factory.SubFactory(UserFactory)
    role = ProjectRole.WRITER


class InvitationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invitation

    organization = factory.SubFactory(OrganizationFactory)
    email = factory.Sequence(lambda n: f"invitee{n}@example.com")
    role = OrgRole.MEMBER


class ServiceAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ServiceAccount

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"robot-{n}")
    role = OrgRole.MEMBER


class ApiTokenFactory(factory.django.DjangoModelFactory):
    """A personal token (give `service_account` and `user=None` for a service account's).
    The secret is made up and thrown away: use accounts.services.token_create when a
    test needs it."""

    class Meta:
        model = ApiToken

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"token {n}")
    token_hash = factory.LazyFunction(lambda: hash_secret(new_secret()))
    prefix = factory.LazyAttribute(lambda o: display_prefix(new_secret()))
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=30))


class CloudFactory(factory.django.DjangoModelFactory):
    """A local cloud, unverified: no test reaches a real cloud through it by accident."""

    class Meta:
        model = Cloud

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Cloud {n}")
    kind = CloudKind.LOCAL


class ComputeConfigFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ComputeConfig

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Config {n}")


class ComputeConfigVersionFactory(factory.django.DjangoModelFactory):
    """Version 1 of a new config on `cloud`, with one worker group that starts empty."""

    class Meta:
        model = ComputeConfigVersion

    cloud = factory.SubFactory(CloudFactory)
    organization = factory.SelfAttribute("cloud.organization")
    config = factory.SubFactory(
        ComputeConfigFactory, organization=factory.SelfAttribute("..organization")
    )
    number = 1
    head_instance_type = "local"
    worker_groups = factory.LazyFunction(
        lambda: [
            {
                "name": "workers",
                "instance_type": "local",
                "cpus": 1,
                "memory_mb": 1024,
                "min": 0,
                "max": 2,
                "spot": False,
            }
        ]
    )


# An organization's container image as a person or a script describes it (the fields of
# the services, the API and the form), for the image tests.
AMI = "ami-0123456789abcdef0"
CONTAINER_IMAGE: dict[str, Any] = {
    "name": "acme ray",
    "image_uri": "acme/ray:2.40",
    "ray_version": "2.40.0",
    "aws_amis": {"us-east-1": AMI},
    "gcp_image": "projects/acme/global/images/family/ray-2",
}


class ContainerImageFactory(factory.django.DjangoModelFactory):
    """A built-in (organization-less) Python environment for the local cloud."""

    class Meta:
        model = ContainerImage

    organization = None
    name = factory.Sequence(lambda n: f"Image {n}")
    ray_version = "2.40.0"


class ClusterFactory(factory.django.DjangoModelFactory):
    """A cluster as the request left it (pending), on a cloud of its project's organization."""

    class Meta:
        model = Cluster

    project = factory.SubFactory(ProjectFactory)
    organization = factory.SelfAttribute("project.organization")
    name = factory.Sequence(lambda n: f"cluster-{n}")
    cloud = factory.SubFactory(CloudFactory, organization=factory.SelfAttribute("..organization"))
    compute_config = factory.SubFactory(
        ComputeConfigVersionFactory, cloud=factory.SelfAttribute("..cloud")
    )
    image = factory.SubFactory(ContainerImageFactory)


class NodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Node

    cluster = factory.SubFactory(ClusterFactory)
    organization = factory.SelfAttribute("cluster.organization")
    role = NodeRole.HEAD
    instance_type = "local"


class SamlAppFactory(factory.django.DjangoModelFactory):
    """allauth's SocialApp for an organization's SAML IdP (made up, never reached)."""

    class Meta:
        model = "socialaccount.SocialApp"
        skip_postgeneration_save = True

    provider = "saml"
    provider_id = factory.Sequence(lambda n: f"saml-app-{n}")
    name = "SAML"
    client_id = factory.Sequence(lambda n: f"saml-app-{n}")
    settings = factory.LazyFunction(
        lambda: {
            "idp": {
                "entity_id": "https://idp.example.test/",
                "sso_url": "https://idp.example.test/sso",
                "x509cert": "",
            },
            "advanced": {"want_assertion_signed": True},
        }
    )

    @factory.post_generation
    def on_this_site(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            from django.contrib.sites.models import Site

            self.sites.add(Site.objects.get_current())


class SsoConnectionFactory(factory.django.DjangoModelFactory):
    """A switched-off SAML connection (accounts.sso.services.saml_connection_save makes
    real ones; tests that sign in use tests/accounts/sso_helpers.connect)."""

    class Meta:
        model = SsoConnection

    organization = factory.SubFactory(OrganizationFactory)
    protocol = "saml"
    social_app = factory.SubFactory(
        SamlAppFactory,
        client_id=factory.SelfAttribute("..organization.slug"),
        provider_id=factory.LazyAttribute(lambda o: f"saml-{o.client_id}"),
    )


class SsoGroupMappingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SsoGroupMapping

    connection = factory.SubFactory(SsoConnectionFactory)
    organization = factory.SelfAttribute("connection.organization")
    idp_group = factory.Sequence(lambda n: f"group-{n}")
    org_role = OrgRole.MEMBER


def remove_workloads() -> None:
    """Delete every workspace, job, schedule and service: they hold on to the clusters,
    configs, images and clouds a test wants to delete."""
    from workloads.jobs.models import Job, JobSchedule
    from workloads.serve.models import Service
    from workloads.workspaces.models import Workspace

    Workspace.objects.all().delete()
    Job.objects.all().delete()
    JobSchedule.objects.all().delete()
    Service.objects.all().delete()
