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
from .providers.base import TAG_CLOUD

ROLE_NAME = "raydeck-control-plane"
EC2_DESCRIBE_ACTIONS = [
    "ec2:DescribeInstances",
    "ec2:DescribeRegions",
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
]


def bucket_and_prefix(log_location: str) -> tuple[str, str]:
    parsed = urlparse(log_location)
    return parsed.netloc, parsed.path.lstrip("/")


def ami_parameter_arn(name: str) -> str:
    """AWS's public parameters (/aws/service/…) belong to no account; others to the role's."""
    account = "" if name.startswith("/aws/service/") else "*"
    return f"arn:aws:ssm:*:{account}:parameter/{name.lstrip('/')}"


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
        # Launching nodes with the instance profile hands its role to EC2.
        statements.append(
            {
                "Sid": "PassNodeRoleToEc2",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            }
        )
    bucket, prefix = bucket_and_prefix(cloud.log_location)
    if bucket:
        statements += [
            {
                "Sid": "LogBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Sid": "LogObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)


def aws_cloudformation(cloud: Cloud) -> str:
    trust = _json(aws_trust_policy(cloud)).replace("\n", "\n        ")
    permissions = _json(aws_permissions_policy(cloud)).replace("\n", "\n            ")
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
Outputs:
  RoleArn:
    Description: Paste this into Raydeck
    Value: !GetAtt RaydeckRole.Arn
"""


def aws_terraform(cloud: Cloud) -> str:
    short = str(cloud.uuid)[:8]
    return f"""resource "aws_iam_role" "raydeck" {{
  name               = "{ROLE_NAME}-{short}"
  assume_role_policy = <<-EOT
{_json(aws_trust_policy(cloud))}
EOT
}}

resource "aws_iam_role_policy" "raydeck" {{
  name   = "raydeck-clusters"
  role   = aws_iam_role.raydeck.id
  policy = <<-EOT
{_json(aws_permissions_policy(cloud))}
EOT
}}

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
    }


def gcp_commands(cloud: Cloud) -> str:
    project = cloud.gcp_project_id or "<project-id>"
    short = str(cloud.uuid)[:8]
    sa = f"raydeck-{short}@{project}.iam.gserviceaccount.com"
    principal = settings.RAYDECK_AWS_PRINCIPAL_ARN or "<raydeck-principal-arn>"
    account = principal.split(":")[4] if principal.count(":") >= 5 else "<raydeck-aws-account>"
    bucket, _ = bucket_and_prefix(cloud.log_location)
    lines = [
        f"# 1. A service account that Raydeck impersonates, allowed to run VMs in {project}",
        f"gcloud iam service-accounts create raydeck-{short} --project {project}",
        f"gcloud projects add-iam-policy-binding {project} \\",
        f"    --member serviceAccount:{sa} --role roles/compute.instanceAdmin.v1",
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
    if bucket:
        lines += [
            "",
            "# 4. Cluster logs",
            f"gcloud storage buckets add-iam-policy-binding gs://{bucket} \\",
            f"    --member serviceAccount:{sa} --role roles/storage.objectAdmin",
        ]
    lines += [
        "",
        "# Then paste into Raydeck:",
        "#   provider: projects/${PROJECT_NUMBER}/locations/global/"
        "workloadIdentityPools/raydeck/providers/raydeck-aws",
        f"#   service account: {sa}",
    ]
    return "\n".join(lines)
