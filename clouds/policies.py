"""What a customer creates on their side, generated for one cloud: the AWS role (trust
and permissions policies, as JSON, CloudFormation and Terraform) and the GCP commands.

Everything here is derived from the Cloud row and the installation's settings, so the
page always shows exactly what verification will expect.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

from .models import Cloud
from .providers import aws_builds
from .providers import gcp_build_names as gcp_builds
from .providers.base import TAG_CLOUD, storage_root

ROLE_NAME = "raydeck-control-plane"
EC2_DESCRIBE_ACTIONS = [
    "ec2:DescribeInstances",
    "ec2:DescribeRegions",
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcs",
]


# What the GCP driver calls (clouds/providers/gcp.py): create, list, get and delete
# instances with their disks, metadata, labels and service account, on a subnetwork,
# from an image; read zones and the project; wait for zone operations.
GCP_CLUSTER_PERMISSIONS = [
    "compute.instances.create",
    "compute.instances.delete",
    "compute.instances.get",
    "compute.instances.list",
    "compute.instances.setMetadata",
    "compute.instances.setLabels",
    "compute.instances.setServiceAccount",
    "compute.instances.setTags",
    "compute.disks.create",
    "compute.images.useReadOnly",
    "compute.images.getFromFamily",
    "compute.subnetworks.use",
    "compute.subnetworks.useExternalIp",
    "compute.zoneOperations.get",
    "compute.zones.get",
    "compute.zones.list",
    "compute.projects.get",
]


def bucket_and_prefix(log_location: str) -> tuple[str, str]:
    parsed = urlparse(log_location)
    return parsed.netloc, parsed.path.lstrip("/")


def ami_parameter_arn(name: str) -> str:
    """AWS's public parameters (/aws/service/…) belong to no account; others to the role's."""
    account = "" if name.startswith("/aws/service/") else "*"
    return f"arn:aws:ssm:*:{account}:parameter/{name.lstrip('/')}"


def aws_node_role_arn(node_identity: str) -> str:
    """The role inside the nodes' instance profile, by the convention AWS's console and
    most templates follow: the role has the profile's name (`raydeck-nodes` in an
    instance profile ARN's account, or any account for a bare name)."""
    name = node_identity.rsplit("/", 1)[-1]
    account = node_identity.split(":")[4] if node_identity.startswith("arn:") else "*"
    return f"arn:aws:iam::{account}:role/{name}"


def aws_trust_policy(cloud: Cloud) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": settings.RAYDECK_AWS_PRINCIPAL_ARN or "<not configured>"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": cloud.aws_external_id}},
            }
        ],
    }


def aws_permissions_policy(cloud: Cloud) -> dict[str, Any]:
    """EC2 writes only on instances tagged with this cloud's id; reads everywhere
    (EC2 Describe calls cannot be limited by resource)."""
    cloud_tag = {f"aws:RequestTag/{TAG_CLOUD}": str(cloud.uuid)}
    statements: list[dict[str, Any]] = [
        {
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": EC2_DESCRIBE_ACTIONS,
            "Resource": "*",
        },
        {
            "Sid": "LaunchTaggedInstances",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
            "Condition": {"StringEquals": cloud_tag},
        },
        {
            "Sid": "LaunchFromImagesAndNetworks",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [
                "arn:aws:ec2:*::image/*",
                "arn:aws:ec2:*:*:subnet/*",
                "arn:aws:ec2:*:*:security-group/*",
                "arn:aws:ec2:*:*:network-interface/*",
                "arn:aws:ec2:*:*:key-pair/*",
            ],
        },
        {
            "Sid": "TagOnLaunchOnly",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
            "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        },
        {
            "Sid": "ManageOwnInstances",
            "Effect": "Allow",
            "Action": ["ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"],
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": {"StringEquals": {f"ec2:ResourceTag/{TAG_CLOUD}": str(cloud.uuid)}},
        },
        {
            # The default AMI of a region, for clusters whose image names none there.
            "Sid": "ReadDefaultImage",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": ami_parameter_arn(settings.RAYDECK_AWS_AMI_PARAMETER),
        },
    ]
    if cloud.node_identity:
        # Launching nodes with the instance profile hands its role to EC2: that role
        # only, and only to EC2.
        statements.append(
            {
                "Sid": "PassNodeRoleToEc2",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": aws_node_role_arn(cloud.node_identity),
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            }
        )
    statements += aws_security_group_statements(cloud)
    statements += aws_router_statements(cloud)
    statements += aws_build_statements(cloud)
    bucket, prefix = bucket_and_prefix(cloud.log_location)
    if bucket:
        # Verification checks that the bucket exists (HeadBucket needs s3:ListBucket) and
        # that its CORS rules let the console's log page read a log, adding Raydeck's rule
        # beside the customer's when none does. The nodes ship their logs with their own
        # role and the control plane never reads them; it reads only its own storage
        # (working directories, stored job logs): their size (HeadObject), and people
        # read them through URLs the role signs, which S3 authorizes as the role.
        _, storage = storage_root(cloud.log_location, "s3://")
        statements += [
            {
                "Sid": "LogBucket",
                "Effect": "Allow",
                "Action": [
                    "s3:ListBucket",
                    "s3:GetBucketLocation",
                    "s3:GetBucketCORS",
                    "s3:PutBucketCORS",
                ],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Sid": "LogObjects",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
            },
            {
                "Sid": "ReadOwnStorage",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": f"arn:aws:s3:::{bucket}/{storage}*",
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def aws_security_group_statements(cloud: Cloud) -> list[dict[str, Any]]:
    """The cloud's one security group (providers/aws_firewall.py): created only tagged
    with this cloud, and only that group's rules changed or deleted."""
    own_group = {f"ec2:ResourceTag/{TAG_CLOUD}": str(cloud.uuid)}
    return [
        {
            "Sid": "CreateTaggedSecurityGroup",
            "Effect": "Allow",
            "Action": "ec2:CreateSecurityGroup",
            "Resource": "arn:aws:ec2:*:*:security-group/*",
            "Condition": {"StringEquals": {f"aws:RequestTag/{TAG_CLOUD}": str(cloud.uuid)}},
        },
        {
            "Sid": "CreateSecurityGroupInVpc",
            "Effect": "Allow",
            "Action": "ec2:CreateSecurityGroup",
            "Resource": "arn:aws:ec2:*:*:vpc/*",
        },
        {
            "Sid": "TagSecurityGroupOnCreate",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "arn:aws:ec2:*:*:security-group/*",
            "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}},
        },
        {
            "Sid": "ManageOwnSecurityGroup",
            "Effect": "Allow",
            "Action": [
                "ec2:AuthorizeSecurityGroupIngress",
                "ec2:RevokeSecurityGroupIngress",
                "ec2:DeleteSecurityGroup",
            ],
            "Resource": "arn:aws:ec2:*:*:security-group/*",
            "Condition": {"StringEquals": own_group},
        },
    ]


# What a service's load balancer takes (providers/aws_router.py); its security group is
# the cloud's kind (aws_security_group_statements).
AWS_ROUTER_READ_ACTIONS = [
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeRules",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
]
AWS_ROUTER_CREATE_ACTIONS = [
    "elasticloadbalancing:CreateLoadBalancer",
    "elasticloadbalancing:CreateListener",
    "elasticloadbalancing:CreateRule",
    "elasticloadbalancing:CreateTargetGroup",
    "elasticloadbalancing:AddTags",
]
AWS_ROUTER_MANAGE_ACTIONS = [
    "elasticloadbalancing:ModifyRule",
    "elasticloadbalancing:ModifyListener",
    "elasticloadbalancing:ModifyTargetGroupAttributes",
    "elasticloadbalancing:RegisterTargets",
    "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:DeleteRule",
    "elasticloadbalancing:DeleteTargetGroup",
    "elasticloadbalancing:DeleteLoadBalancer",
]

# The endpoints' certificates in ACM (aws_router.py): found by their tags, imported
# tagged with the cloud, then only those re-imported (renewed) or deleted.
AWS_ROUTER_CERTIFICATE_READ_ACTIONS = ["acm:ListCertificates", "acm:ListTagsForCertificate"]
AWS_ROUTER_CERTIFICATE_CREATE_ACTIONS = ["acm:ImportCertificate", "acm:AddTagsToCertificate"]
AWS_ROUTER_CERTIFICATE_MANAGE_ACTIONS = [
    "acm:ImportCertificate",
    "acm:AddTagsToCertificate",
    "acm:DescribeCertificate",
    "acm:DeleteCertificate",
]


def _tagged_statements(
    cloud: Cloud, what: str, read: list[str], create: list[str], manage: list[str]
) -> list[dict[str, Any]]:
    """Read any (AWS cannot limit these by resource), create only tagged with this cloud,
    then change or delete only what carries its tag."""
    return [
        {"Sid": f"Describe{what}", "Effect": "Allow", "Action": read, "Resource": "*"},
        {
            "Sid": f"CreateTagged{what}",
            "Effect": "Allow",
            "Action": create,
            "Resource": "*",
            "Condition": {"StringEquals": {f"aws:RequestTag/{TAG_CLOUD}": str(cloud.uuid)}},
        },
        {
            "Sid": f"ManageOwn{what}",
            "Effect": "Allow",
            "Action": manage,
            "Resource": "*",
            "Condition": {"StringEquals": {f"aws:ResourceTag/{TAG_CLOUD}": str(cloud.uuid)}},
        },
    ]


def aws_router_statements(cloud: Cloud) -> list[dict[str, Any]]:
    """Services' load balancers and their endpoints' certificates: created only tagged
    with this cloud, and only those changed or deleted."""
    return [
        *_tagged_statements(
            cloud,
            "LoadBalancers",
            AWS_ROUTER_READ_ACTIONS,
            AWS_ROUTER_CREATE_ACTIONS,
            AWS_ROUTER_MANAGE_ACTIONS,
        ),
        *_tagged_statements(
            cloud,
            "EndpointCertificates",
            AWS_ROUTER_CERTIFICATE_READ_ACTIONS,
            AWS_ROUTER_CERTIFICATE_CREATE_ACTIONS,
            AWS_ROUTER_CERTIFICATE_MANAGE_ACTIONS,
        ),
        {
            # The first load balancer of an account makes ELB's service-linked role.
            "Sid": "LoadBalancingServiceRole",
            "Effect": "Allow",
            "Action": "iam:CreateServiceLinkedRole",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}
            },
        },
    ]


# What the driver calls for image builds (providers/aws_builds.py), on the cloud's own
# repository, project and log group only.
AWS_BUILD_ECR_ACTIONS = [
    "ecr:CreateRepository",
    "ecr:DescribeImages",
    "ecr:DeleteRepository",
    "ecr:TagResource",
]
AWS_BUILD_PROJECT_ACTIONS = [
    "codebuild:CreateProject",
    "codebuild:BatchGetProjects",
    "codebuild:DeleteProject",
    "codebuild:ListBuildsForProject",
    "codebuild:StartBuild",
    "codebuild:BatchGetBuilds",
    "codebuild:StopBuild",
]
AWS_BUILD_LOG_ACTIONS = [
    "logs:CreateLogGroup",
    "logs:PutRetentionPolicy",
    "logs:TagResource",
    "logs:DeleteLogGroup",
    "logs:GetLogEvents",
]
# What the build itself (CodeBuild, as the build role) does: push to the cloud's
# repository (pulling its layers back is part of a push), write its log.
AWS_PUSH_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
]
# What a node does to run a built image: log in, pull by digest.
AWS_PULL_ACTIONS = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]


def _build_arns(cloud: Cloud) -> dict[str, str]:
    name = aws_builds.resource_name(cloud.uuid)
    group = aws_builds.log_group(cloud.uuid)
    return {
        "repository": f"arn:aws:ecr:*:*:repository/{name}",
        "project": f"arn:aws:codebuild:*:*:project/{name}",
        "log_group": f"arn:aws:logs:*:*:log-group:{group}",
        "log_streams": f"arn:aws:logs:*:*:log-group:{group}:log-stream:*",
    }


def aws_build_statements(cloud: Cloud) -> list[dict[str, Any]]:
    """Image builds: the cloud's repository, project and log group, and handing the
    build role to CodeBuild only."""
    arns = _build_arns(cloud)
    return [
        {
            "Sid": "BuildRepository",
            "Effect": "Allow",
            "Action": AWS_BUILD_ECR_ACTIONS,
            "Resource": arns["repository"],
        },
        {
            "Sid": "BuildProject",
            "Effect": "Allow",
            "Action": AWS_BUILD_PROJECT_ACTIONS,
            "Resource": arns["project"],
        },
        {
            "Sid": "BuildLogs",
            "Effect": "Allow",
            "Action": AWS_BUILD_LOG_ACTIONS,
            "Resource": [arns["log_group"], arns["log_streams"]],
        },
        {
            "Sid": "PassBuildRoleToCodeBuild",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": aws_builds.build_role_arn(cloud.aws_role_arn, cloud.uuid),
            "Condition": {"StringEquals": {"iam:PassedToService": "codebuild.amazonaws.com"}},
        },
    ]


def aws_build_trust_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "codebuild.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def _registry_login() -> dict[str, Any]:
    # GetAuthorizationToken is account-wide: it cannot be limited to a repository.
    return {
        "Sid": "RegistryLogin",
        "Effect": "Allow",
        "Action": "ecr:GetAuthorizationToken",
        "Resource": "*",
    }


def aws_build_role_policy(cloud: Cloud) -> dict[str, Any]:
    """The build role's permissions: push to the cloud's repository, write its log."""
    arns = _build_arns(cloud)
    return {
        "Version": "2012-10-17",
        "Statement": [
            _registry_login(),
            {
                "Sid": "PushToCloudRepository",
                "Effect": "Allow",
                "Action": AWS_PUSH_ACTIONS,
                "Resource": arns["repository"],
            },
            {
                "Sid": "WriteBuildLog",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [arns["log_group"], arns["log_streams"]],
            },
        ],
    }


def aws_node_pull_policy(cloud: Cloud) -> dict[str, Any]:
    """What the nodes' role needs to pull the cloud's built images by digest."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            _registry_login(),
            {
                "Sid": "PullFromCloudRepository",
                "Effect": "Allow",
                "Action": AWS_PULL_ACTIONS,
                "Resource": _build_arns(cloud)["repository"],
            },
        ],
    }


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)


def aws_cloudformation(cloud: Cloud) -> str:
    trust = _json(aws_trust_policy(cloud)).replace("\n", "\n        ")
    permissions = _json(aws_permissions_policy(cloud)).replace("\n", "\n            ")
    build_trust = _json(aws_build_trust_policy()).replace("\n", "\n        ")
    build_permissions = _json(aws_build_role_policy(cloud)).replace("\n", "\n            ")
    return f"""AWSTemplateFormatVersion: "2010-09-09"
Description: Lets Raydeck manage Ray clusters tagged {TAG_CLOUD}={cloud.uuid}
Resources:
  RaydeckRole:
    Type: AWS::IAM::Role
    Properties:
      RoleName: {ROLE_NAME}-{str(cloud.uuid)[:8]}
      AssumeRolePolicyDocument:
        {trust}
      Policies:
        - PolicyName: raydeck-clusters
          PolicyDocument:
            {permissions}
  RaydeckBuildRole:
    Type: AWS::IAM::Role
    Properties:
      RoleName: {aws_builds.build_role_name(cloud.uuid)}
      AssumeRolePolicyDocument:
        {build_trust}
      Policies:
        - PolicyName: raydeck-builds
          PolicyDocument:
            {build_permissions}
Outputs:
  RoleArn:
    Description: Paste this into Raydeck
    Value: !GetAtt RaydeckRole.Arn
"""


def _terraform_role(
    resource: str, name: str, trust: dict[str, Any], policy_name: str, policy: dict[str, Any]
) -> str:
    return f"""resource "aws_iam_role" "{resource}" {{
  name               = "{name}"
  assume_role_policy = <<-EOT
{_json(trust)}
EOT
}}

resource "aws_iam_role_policy" "{resource}" {{
  name   = "{policy_name}"
  role   = aws_iam_role.{resource}.id
  policy = <<-EOT
{_json(policy)}
EOT
}}
"""


def aws_terraform(cloud: Cloud) -> str:
    short = str(cloud.uuid)[:8]
    control = _terraform_role(
        "raydeck",
        f"{ROLE_NAME}-{short}",
        aws_trust_policy(cloud),
        "raydeck-clusters",
        aws_permissions_policy(cloud),
    )
    builds = _terraform_role(
        "raydeck_builds",
        aws_builds.build_role_name(cloud.uuid),
        aws_build_trust_policy(),
        "raydeck-builds",
        aws_build_role_policy(cloud),
    )
    return f"""{control}
# Image builds run in CodeBuild as this role (it pushes to the cloud's ECR repository).
{builds}
output "raydeck_role_arn" {{
  value = aws_iam_role.raydeck.arn  # paste this into Raydeck
}}
"""


def aws_documents(cloud: Cloud) -> dict[str, str]:
    return {
        "trust": _json(aws_trust_policy(cloud)),
        "permissions": _json(aws_permissions_policy(cloud)),
        "cloudformation": aws_cloudformation(cloud),
        "terraform": aws_terraform(cloud),
        "build_permissions": _json(aws_build_role_policy(cloud)),
        "node_pull": _json(aws_node_pull_policy(cloud)),
    }


# Exactly what the cloud's firewall rules need (providers/gcp_firewall.py).
GCP_FIREWALL_PERMISSIONS = [
    "compute.firewalls.create",
    "compute.firewalls.get",
    "compute.firewalls.update",
    "compute.firewalls.delete",
    "compute.networks.updatePolicy",
    "compute.globalOperations.get",
]


# What a service's load balancer takes (providers/gcp_router.py), its firewall rule aside
# (GCP_FIREWALL_PERMISSIONS): the parts it makes, and using one in the next.
GCP_ROUTER_PERMISSIONS = [
    "compute.globalAddresses.create",
    "compute.globalAddresses.get",
    "compute.globalAddresses.delete",
    "compute.globalAddresses.use",
    "compute.healthChecks.create",
    "compute.healthChecks.get",
    "compute.healthChecks.delete",
    "compute.healthChecks.useReadOnly",
    "compute.networkEndpointGroups.create",
    "compute.networkEndpointGroups.get",
    "compute.networkEndpointGroups.delete",
    "compute.networkEndpointGroups.use",
    "compute.networkEndpointGroups.attachNetworkEndpoints",
    "compute.networkEndpointGroups.detachNetworkEndpoints",
    "compute.instances.use",
    "compute.networks.use",
    "compute.backendServices.create",
    "compute.backendServices.get",
    "compute.backendServices.list",
    "compute.backendServices.update",
    "compute.backendServices.delete",
    "compute.backendServices.use",
    "compute.urlMaps.create",
    "compute.urlMaps.get",
    "compute.urlMaps.update",
    "compute.urlMaps.delete",
    "compute.urlMaps.use",
    "compute.targetHttpProxies.create",
    "compute.targetHttpProxies.get",
    "compute.targetHttpProxies.delete",
    "compute.targetHttpProxies.use",
    # The HTTPS endpoint: its certificate (get: what a proxy naming it needs) and proxy.
    "compute.sslCertificates.create",
    "compute.sslCertificates.get",
    "compute.sslCertificates.list",
    "compute.sslCertificates.delete",
    "compute.targetHttpsProxies.create",
    "compute.targetHttpsProxies.get",
    "compute.targetHttpsProxies.delete",
    "compute.targetHttpsProxies.use",
    "compute.targetHttpsProxies.setSslCertificates",
    "compute.globalForwardingRules.create",
    "compute.globalForwardingRules.get",
    "compute.globalForwardingRules.delete",
]


def _gcp_role_commands(role: str, permissions: list[str], project: str, sa: str) -> list[str]:
    """A custom role with exactly `permissions`, for the cloud's service account."""
    return [
        f"gcloud iam roles create {role} --project {project} \\",
        f"    --permissions {','.join(permissions)}",
        f"gcloud projects add-iam-policy-binding {project} \\",
        f"    --member serviceAccount:{sa} --role projects/{project}/roles/{role}",
    ]


# What the GCP driver calls for image builds (providers/gcp_builds.py): the cloud's
# Artifact Registry repository, and Cloud Build's builds (cancel is builds.update).
GCP_BUILD_PERMISSIONS = [
    "artifactregistry.repositories.create",
    "artifactregistry.repositories.delete",
    "cloudbuild.builds.create",
    "cloudbuild.builds.get",
    "cloudbuild.builds.list",
    "cloudbuild.builds.update",
]
# Reading a build's log, granted on the build-log folder of the cloud's bucket only.
GCP_BUILD_LOG_PERMISSION = "storage.objects.get"


def gcp_build_commands(cloud: Cloud, project: str, short: str, sa: str, bucket: str) -> list[str]:
    """A role with GCP_BUILD_PERMISSIONS for Raydeck's account; the build service account
    (may push to the cloud's repository only and write build logs), which Raydeck's
    account may act as; and the nodes' pull of built images."""
    role = f"raydeckBuilds_{short}"
    builder = gcp_builds.build_service_account(project, cloud.uuid)
    region = cloud.region or "<region>"
    repository = f"projects/{project}/locations/{region}/repositories/"
    repository += gcp_builds.repository_id(cloud.uuid)
    only_repository = (
        f'--condition \'expression=resource.name.startsWith("{repository}"),'
        "title=raydeck-build-repository'"
    )
    lines = [
        "",
        "# Image builds: Cloud Build runs as its own service account, which may push to",
        "#    this cloud's Artifact Registry repository only; Raydeck may act as it",
        f"gcloud iam roles create {role} --project {project} \\",
        f"    --permissions {','.join(GCP_BUILD_PERMISSIONS)}",
        f"gcloud projects add-iam-policy-binding {project} \\",
        f"    --member serviceAccount:{sa} --role projects/{project}/roles/{role}",
        f"gcloud iam service-accounts create raydeck-builds-{short} --project {project}",
        f"gcloud iam service-accounts add-iam-policy-binding {builder} \\",
        f"    --member serviceAccount:{sa} --role roles/iam.serviceAccountUser",
        f"gcloud projects add-iam-policy-binding {project} \\",
        f"    --member serviceAccount:{builder} --role roles/artifactregistry.writer \\",
        f"    {only_repository}",
    ]
    if bucket:
        # The build writes its log under the cloud's build-log folder; Raydeck reads
        # objects there only (the image page shows the log), nothing else in the bucket.
        folder = gcp_builds.log_folder(cloud.log_location, cloud.uuid)
        logs = f"projects/_/buckets/{bucket}/objects/{folder}/"
        only_logs = (
            f'--condition \'expression=resource.name.startsWith("{logs}"),'
            "title=raydeck-build-logs'"
        )
        lines += [
            f"gcloud storage buckets add-iam-policy-binding gs://{bucket} \\",
            f"    --member serviceAccount:{builder} --role roles/storage.objectCreator \\",
            f"    {only_logs}",
            f"gcloud iam roles create raydeckBuildLogs{short} --project {project} \\",
            f"    --permissions {GCP_BUILD_LOG_PERMISSION}",
            f"gcloud storage buckets add-iam-policy-binding gs://{bucket} \\",
            f"    --member serviceAccount:{sa} \\",
            f"    --role projects/{project}/roles/raydeckBuildLogs{short} {only_logs}",
        ]
    if cloud.node_identity:
        lines += [
            "# Nodes pull the cloud's built images by digest",
            f"gcloud projects add-iam-policy-binding {project} \\",
            f"    --member serviceAccount:{cloud.node_identity} "
            "--role roles/artifactregistry.reader \\",
            f"    {only_repository}",
        ]
    return lines


def gcp_storage_commands(cloud: Cloud, project: str, short: str, sa: str) -> list[str]:
    """Raydeck's own storage in the bucket (working directories, stored job logs): it
    signs short-lived URLs for them as the service account (IAM signBlob, on itself only)
    and reads their size, nothing else in the bucket."""
    bucket, storage = storage_root(cloud.log_location, "gs://")
    only_storage = (
        "--condition 'expression=resource.name.startsWith("
        f'"projects/_/buckets/{bucket}/objects/{storage}"),title=raydeck-storage\''
    )
    return [
        "",
        "# 5. Working directories and job logs: Raydeck signs short-lived URLs for them",
        "#    as the service account and reads their size, under raydeck-storage/ only",
        f"gcloud iam roles create raydeckSignUrls{short} --project {project} \\",
        "    --permissions iam.serviceAccounts.signBlob",
        f"gcloud iam service-accounts add-iam-policy-binding {sa} \\",
        f"    --member serviceAccount:{sa} --role projects/{project}/roles/raydeckSignUrls{short}",
        f"gcloud iam roles create raydeckStorage{short} --project {project} \\",
        "    --permissions storage.objects.get",
        f"gcloud storage buckets add-iam-policy-binding gs://{bucket} \\",
        f"    --member serviceAccount:{sa} \\",
        f"    --role projects/{project}/roles/raydeckStorage{short} {only_storage}",
    ]


def gcp_commands(cloud: Cloud) -> str:
    project = cloud.gcp_project_id or "<project-id>"
    short = str(cloud.uuid)[:8]
    sa = f"raydeck-{short}@{project}.iam.gserviceaccount.com"
    principal = settings.RAYDECK_AWS_PRINCIPAL_ARN or "<raydeck-principal-arn>"
    account = principal.split(":")[4] if principal.count(":") >= 5 else "<raydeck-aws-account>"
    bucket, _ = bucket_and_prefix(cloud.log_location)
    role = f"raydeckClusters{short}"
    lines = [
        "# 1. A service account that Raydeck impersonates, allowed only what it does with",
        f"#    VMs in {project} (a role of its own, narrower than compute.instanceAdmin)",
        f"gcloud iam service-accounts create raydeck-{short} --project {project}",
        f"gcloud iam roles create {role} --project {project} \\",
        f'    --title "Raydeck clusters {short}" --permissions {",".join(GCP_CLUSTER_PERMISSIONS)}',
        f"gcloud projects add-iam-policy-binding {project} \\",
        f"    --member serviceAccount:{sa} --role projects/{project}/roles/{role}",
        *_gcp_role_commands(f"raydeckFirewall_{short}", GCP_FIREWALL_PERMISSIONS, project, sa),
        *_gcp_role_commands(f"raydeckServices_{short}", GCP_ROUTER_PERMISSIONS, project, sa),
        *gcp_build_commands(cloud, project, short, sa, bucket),
        "",
        "# 2. A Workload Identity pool and provider that trust Raydeck's identity",
        f"gcloud iam workload-identity-pools create raydeck --location global --project {project}",
        "gcloud iam workload-identity-pools providers create-aws raydeck-aws \\",
        f"    --workload-identity-pool raydeck --account-id {account} \\",
        f"    --location global --project {project}",
        "",
        "# 3. Let identities from that pool impersonate the service account",
        f"PROJECT_NUMBER=$(gcloud projects describe {project} --format 'value(projectNumber)')",
        f"gcloud iam service-accounts add-iam-policy-binding {sa} \\",
        "    --role roles/iam.workloadIdentityUser \\",
        '    --member "principalSet://iam.googleapis.com/projects/${PROJECT_NUMBER}'
        '/locations/global/workloadIdentityPools/raydeck/*"',
    ]
    if cloud.node_identity:
        lines += [
            "",
            "# Nodes run as their own service account: Raydeck may attach that one only",
            f"gcloud iam service-accounts add-iam-policy-binding {cloud.node_identity} \\",
            f"    --member serviceAccount:{sa} --role roles/iam.serviceAccountUser",
        ]
    if bucket:
        # The nodes write their logs with their own identity; Raydeck checks that the
        # bucket exists (storage.buckets.get), adds its CORS entry for the console's log
        # page when none allows it (storage.buckets.update: Cloud Storage has no narrower
        # permission, so the role is granted on this bucket only), may write (uploads),
        # never reads an object but its image builds' logs (gcp_build_commands) and its
        # own storage (gcp_storage_commands).
        lines += [
            "",
            "# 4. Cluster logs: Raydeck checks the bucket, lets the console read job logs",
            "#    from it (a CORS entry) and never reads the nodes' logs",
            f"gcloud iam roles create raydeckLogBucket{short} --project {project} \\",
            f'    --title "Raydeck log bucket {short}" \\',
            "    --permissions storage.buckets.get,storage.buckets.update,storage.objects.create",
            f"gcloud storage buckets add-iam-policy-binding gs://{bucket} \\",
            f"    --member serviceAccount:{sa} \\",
            f"    --role projects/{project}/roles/raydeckLogBucket{short}",
            *gcp_storage_commands(cloud, project, short, sa),
        ]
    lines += [
        "",
        "# Then paste into Raydeck:",
        "#   provider: projects/${PROJECT_NUMBER}/locations/global/"
        "workloadIdentityPools/raydeck/providers/raydeck-aws",
        f"#   service account: {sa}",
    ]
    return "\n".join(lines)
