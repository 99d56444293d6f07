"""The AWS driver against moto: moto stands in for AWS, in-process decorator mode
(`mock_aws()` entered by the autouse fixture around every test), with fake AWS
credentials in the environment, so nothing ever leaves the machine.

moto ignores two things real AWS enforces, so the tests add them with botocore event
hooks on the provider's base session (every client the driver makes is created from it):
- the trust policy's sts:ExternalId condition (`Fake.enforce_trust`);
- EC2's ClientToken idempotency (`Fake.honour_client_tokens`).
Errors are injected the same way: a `before-call` handler that returns an error response
short-circuits the request, exactly as if AWS had answered it.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from moto import mock_aws

from clouds.providers import aws as aws_driver
from clouds.providers.aws import AwsProvider
from clouds.providers.base import (
    TAG_CLOUD,
    TAG_CLUSTER,
    TAG_NODE,
    CloudError,
    InstanceState,
    NodeSpec,
    PermanentCloudError,
    PermanentErrorKind,
    TransientCloudError,
    idempotency_key,
)

ACCOUNT = "123456789012"  # moto's default account: assumed roles land in it
REGION = "us-east-1"
ROLE_NAME = "raydeck-control-plane"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
EXTERNAL_ID = "raydeck-ext-aaaaaaaaaaaaaaaa"
OTHER_EXTERNAL_ID = "raydeck-ext-bbbbbbbbbbbbbbbb"
BUCKET = "raydeck-logs"
CONSOLE = "https://raydeck.example.com"
BOOT = "#!/bin/bash\necho joining cluster\n"
_LOADER = botocore.session.get_session().get_component("data_loader")


# --- Fixtures --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Fake credentials and no shared config, then moto for the whole test."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        # Images are not checked here; loading moto's catalogue costs seconds per test.
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(aws_driver, "_DEFAULT_SESSION", None)  # read this environment
    aws_driver.clear_credentials_cache()
    with mock_aws():
        yield
    aws_driver.clear_credentials_cache()


def _trust_policy(*external_ids: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": list(external_ids)}},
                }
            ],
        }
    )


def _error(
    code: str, status: int = 400, message: str = "injected"
) -> tuple[AWSResponse, dict[str, Any]]:
    """What a before-call handler returns to make the call fail as AWS would."""
    http = AWSResponse("https://aws.invalid", status, {}, None)
    return http, {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


def _ok(parsed: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    parsed = {**parsed, "ResponseMetadata": {"HTTPStatusCode": 200}}
    return AWSResponse("https://aws.invalid", 200, {}, None), parsed


class Fake:
    """Raydeck's base session, plus hooks that record, enforce and inject."""

    def __init__(self) -> None:
        # A fresh session (so hooks never leak between tests) sharing the model loader
        # (decoding botocore's service JSON again costs about a second per test).
        core = botocore.session.get_session()
        core.register_component("data_loader", _LOADER)
        self.session = boto3.session.Session(botocore_session=core, region_name=REGION)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.issued: list[dict[str, Any]] = []  # every credential moto handed out
        # Raydeck's direct view of the account (its own session: none of the hooks).
        self.iam = boto3.client("iam", region_name=REGION)
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)
        # moto does not check image ids.
        self.image = "ami-0123456789abcdef0"
        self.on("provide-client-params", self._record)
        self.on("after-call.sts.AssumeRole", self._remember_credentials)

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        self.session.events.register(event, handler)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def _remember_credentials(self, parsed: dict[str, Any], **_: Any) -> None:
        if "Credentials" in parsed:
            self.issued.append(parsed["Credentials"])

    def params(self, operation: str) -> list[dict[str, Any]]:
        return [p for name, p in self.calls if name == operation]

    def secrets(self) -> list[str]:
        return [c[k] for c in self.issued for k in ("SecretAccessKey", "SessionToken")]

    def fail(self, operation: str, code: str, status: int = 400) -> None:
        """Every call of `operation` ("ec2.RunInstances") fails with `code`."""
        self.on(f"before-call.{operation}", lambda **_: _error(code, status))

    def raise_(self, operation: str, exc: Exception) -> None:
        def handler(**_: Any) -> None:
            raise exc

        self.on(f"before-call.{operation}", handler)

    def enforce_trust(self) -> None:
        """AssumeRole as real AWS does it: AccessDenied unless the role exists and its
        trust policy's sts:ExternalId condition lists the ExternalId sent."""

        def handler(params: dict[str, Any], **_: Any) -> Any:
            body = params["body"]
            name = body["RoleArn"].rsplit("/", 1)[-1]
            try:
                document = self.iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
            except self.iam.exceptions.NoSuchEntityException:
                return _error("AccessDenied", 403, "not authorized to perform sts:AssumeRole")
            if isinstance(document, str):
                document = json.loads(document)
            allowed = {
                external_id
                for statement in document["Statement"]
                for external_id in statement["Condition"]["StringEquals"]["sts:ExternalId"]
            }
            if body.get("ExternalId") not in allowed:
                return _error("AccessDenied", 403, "not authorized to perform sts:AssumeRole")
            return None

        self.on("before-call.sts.AssumeRole", handler)

    def honour_client_tokens(self) -> None:
        """RunInstances as real EC2 does it: a repeated ClientToken returns the first
        call's instances instead of launching again."""
        by_token: dict[str, dict[str, Any]] = {}

        def before(params: dict[str, Any], **_: Any) -> Any:
            token = params["body"].get("ClientToken")
            return _ok(by_token[token]) if token in by_token else None

        def after(parsed: dict[str, Any], **_: Any) -> None:
            if "Instances" in parsed:
                by_token.setdefault(self.params("RunInstances")[-1]["ClientToken"], parsed)

        self.on("before-call.ec2.RunInstances", before)
        self.on("after-call.ec2.RunInstances", after)

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        reservations = self.ec2.describe_instances(Filters=filters)["Reservations"]
        return [i for r in reservations for i in r["Instances"]]


@pytest.fixture
def fake() -> Fake:
    fake = Fake()
    fake.iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=_trust_policy(EXTERNAL_ID))
    fake.enforce_trust()
    return fake


def make_provider(fake: Fake, **overrides: Any) -> AwsProvider:
    values: dict[str, Any] = {
        "cloud_id": uuid.UUID("11111111-2222-3333-4444-555555555555"),
        "region": REGION,
        "role_arn": ROLE_ARN,
        "external_id": EXTERNAL_ID,
        "log_location": "",
        "base_session": fake.session,
        "console_origin": CONSOLE,
        **overrides,
    }
    return AwsProvider(**values)


@pytest.fixture
def provider(fake: Fake) -> AwsProvider:
    return make_provider(fake)


def make_node(fake: Fake, cluster_id: uuid.UUID | None = None, **overrides: Any) -> NodeSpec:
    values: dict[str, Any] = {
        "node_id": uuid.uuid4(),
        "cluster_id": cluster_id or uuid.uuid4(),
        "name": "ray-head",
        "instance_type": "m5.large",
        "image": fake.image,
        **overrides,
    }
    return NodeSpec(**values)


def launch(provider: AwsProvider, node: NodeSpec, attempt: int = 0) -> Any:
    key = idempotency_key(node.node_id, attempt)
    return provider.launch(node=node, boot_script=BOOT, idempotency_key=key)


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every log record at DEBUG (botocore's included), formatted with tracebacks.
    Our own handler so it also works with `-p no:logging` (no caplog there)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


# --- Assume role -----------------------------------------------------------------------


def test_assume_role_sends_this_clouds_external_id_and_is_cached(
    fake: Fake, provider: AwsProvider
) -> None:
    provider.list_instances()
    provider.list_instances()

    (call,) = fake.params("AssumeRole")  # the second operation reused the session
    assert call == {
        "RoleArn": ROLE_ARN,
        "RoleSessionName": "raydeck-11111111",
        "ExternalId": EXTERNAL_ID,
        "DurationSeconds": 3600,
    }


def test_default_session_is_raydecks_environment(fake: Fake) -> None:
    """As the registry builds it: no session given, boto3's default chain (the fake
    environment credentials here) calls STS."""
    provider = AwsProvider(
        cloud_id=uuid.uuid4(),
        region=REGION,
        role_arn=ROLE_ARN,
        external_id=EXTERNAL_ID,
        log_location="",
    )

    assert provider.list_instances() == []
    assert provider.verify()[0].passed
    assert (ROLE_ARN, EXTERNAL_ID) in aws_driver._CACHE


def test_two_clouds_with_the_same_role_never_share_credentials(fake: Fake) -> None:
    fake.iam.update_assume_role_policy(
        RoleName=ROLE_NAME, PolicyDocument=_trust_policy(EXTERNAL_ID, OTHER_EXTERNAL_ID)
    )
    first = make_provider(fake)
    second = make_provider(fake, cloud_id=uuid.uuid4(), external_id=OTHER_EXTERNAL_ID)

    for provider in (first, second, first, second):
        provider.list_instances()

    sent = [p["ExternalId"] for p in fake.params("AssumeRole")]
    assert sent == [EXTERNAL_ID, OTHER_EXTERNAL_ID]  # one each, then both from the cache
    keys = {k: c.access_key_id for k, c in aws_driver._CACHE.items()}
    assert keys[(ROLE_ARN, EXTERNAL_ID)] != keys[(ROLE_ARN, OTHER_EXTERNAL_ID)]


def test_a_cloud_the_role_does_not_trust_gets_nothing_from_the_cache(fake: Fake) -> None:
    trusted = make_provider(fake)
    intruder = make_provider(fake, cloud_id=uuid.uuid4(), external_id=OTHER_EXTERNAL_ID)
    trusted.list_instances()  # the role's session is now cached for the trusted cloud

    with pytest.raises(PermanentCloudError) as caught:
        intruder.list_instances()

    assert caught.value.kind == PermanentErrorKind.PERMISSION
    assert [p["ExternalId"] for p in fake.params("AssumeRole")] == [EXTERNAL_ID, OTHER_EXTERNAL_ID]
    assert len(fake.params("DescribeInstances")) == 1  # only the trusted cloud's call


def test_credentials_are_refreshed_before_they_expire(
    fake: Fake, provider: AwsProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider.list_instances()
    expiration = aws_driver._CACHE[(ROLE_ARN, EXTERNAL_ID)].expiration

    monkeypatch.setattr(aws_driver, "_now", lambda: expiration - timedelta(minutes=10))
    provider.list_instances()
    assert len(fake.params("AssumeRole")) == 1  # still comfortably valid

    monkeypatch.setattr(aws_driver, "_now", lambda: expiration - timedelta(minutes=4))
    provider.list_instances()
    assert len(fake.params("AssumeRole")) == 2  # inside the refresh margin


def test_sts_throttling_during_early_refresh_keeps_the_old_session(
    fake: Fake, provider: AwsProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider.list_instances()
    expiration = aws_driver._CACHE[(ROLE_ARN, EXTERNAL_ID)].expiration
    monkeypatch.setattr(aws_driver, "_now", lambda: expiration - timedelta(minutes=4))
    fake.fail("sts.AssumeRole", "Throttling", 400)

    provider.list_instances()  # refresh failed, the still-valid session was used

    monkeypatch.setattr(aws_driver, "_now", lambda: expiration - timedelta(seconds=30))
    with pytest.raises(TransientCloudError):
        provider.list_instances()
    assert len(fake.params("DescribeInstances")) == 2


def test_expired_session_is_forgotten_and_retried(fake: Fake, provider: AwsProvider) -> None:
    provider.list_instances()
    fake.fail("ec2.DescribeInstances", "RequestExpired")

    with pytest.raises(TransientCloudError):
        provider.list_instances()
    assert (ROLE_ARN, EXTERNAL_ID) not in aws_driver._CACHE


def test_no_external_id_means_no_assume_role(fake: Fake) -> None:
    provider = make_provider(fake, external_id="")

    with pytest.raises(PermanentCloudError):
        provider.list_instances()
    assert fake.params("AssumeRole") == []


# --- Launch ----------------------------------------------------------------------------


def test_launch_tags_instance_and_volume_and_passes_user_data(
    fake: Fake, provider: AwsProvider
) -> None:
    node = make_node(fake, labels={"team": "ml"})

    instance = launch(provider, node)

    assert instance.node_id == node.node_id
    assert instance.cluster_id == node.cluster_id
    assert instance.state in (InstanceState.PENDING, InstanceState.RUNNING)
    assert instance.instance_type == "m5.large"
    expected = {
        TAG_CLOUD: str(provider.cloud_id),
        TAG_CLUSTER: str(node.cluster_id),
        TAG_NODE: str(node.node_id),
        "team": "ml",
        "Name": "ray-head",
    }
    (data,) = fake.instances()
    assert {t["Key"]: t["Value"] for t in data["Tags"]} == expected
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    volumes = fake.ec2.describe_volumes(
        Filters=[{"Name": f"tag:{TAG_NODE}", "Values": [str(node.node_id)]}]
    )["Volumes"]
    assert len(volumes) == 1
    assert {t["Key"]: t["Value"] for t in volumes[0]["Tags"]} == expected
    user_data = fake.ec2.describe_instance_attribute(
        InstanceId=instance.instance_id, Attribute="userData"
    )["UserData"]["Value"]
    assert base64.b64decode(user_data).decode() == BOOT
    (params,) = fake.params("RunInstances")
    assert params["ClientToken"] == idempotency_key(node.node_id)
    assert params["MinCount"] == params["MaxCount"] == 1
    assert params["ImageId"] == fake.image
    assert "InstanceMarketOptions" not in params
    assert "Placement" not in params


def test_a_name_label_does_not_duplicate_the_name_tag(fake: Fake, provider: AwsProvider) -> None:
    launch(provider, make_node(fake, labels={"Name": "custom"}))

    (params,) = fake.params("RunInstances")
    keys = [t["Key"] for t in params["TagSpecifications"][0]["Tags"]]
    assert keys.count("Name") == 1
    assert len(fake.instances(Name="custom")) == 1


def test_launch_spot_in_a_zone(fake: Fake, provider: AwsProvider) -> None:
    node = make_node(fake, spot=True, zone="us-east-1b")

    launch(provider, node)

    (params,) = fake.params("RunInstances")
    assert params["InstanceMarketOptions"]["MarketType"] == "spot"
    assert params["Placement"] == {"AvailabilityZone": "us-east-1b"}
    (data,) = fake.instances()
    assert data["InstanceLifecycle"] == "spot"
    assert data["Placement"]["AvailabilityZone"] == "us-east-1b"


def test_relaunch_of_the_same_node_returns_its_instance(fake: Fake, provider: AwsProvider) -> None:
    node = make_node(fake)

    first = launch(provider, node)
    again = launch(provider, node)

    assert again.instance_id == first.instance_id
    assert len(fake.instances()) == 1
    assert len(fake.params("RunInstances")) == 1  # found by its tags; moto ignores ClientToken


def test_relaunch_after_the_instance_is_gone_starts_a_new_one(
    fake: Fake, provider: AwsProvider
) -> None:
    node = make_node(fake)
    first = launch(provider, node)
    provider.terminate(instance_id=first.instance_id)

    second = launch(provider, node, attempt=1)

    assert second.instance_id != first.instance_id
    tokens = [p["ClientToken"] for p in fake.params("RunInstances")]
    assert tokens == [idempotency_key(node.node_id, 0), idempotency_key(node.node_id, 1)]


def test_lost_response_then_relaunch_finds_the_created_instance(
    fake: Fake, provider: AwsProvider
) -> None:
    """EC2 created the instance but the answer never arrived (read timeout)."""
    node = make_node(fake)
    lost: list[str] = []

    def lose_the_answer(parsed: dict[str, Any], **_: Any) -> None:
        if not lost:
            lost.append(parsed["Instances"][0]["InstanceId"])
            raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    fake.on("after-call.ec2.RunInstances", lose_the_answer)

    with pytest.raises(TransientCloudError):
        launch(provider, node)
    instance = launch(provider, node)  # what the reconciler does next

    assert [i["InstanceId"] for i in fake.instances()] == lost == [instance.instance_id]


def test_lost_response_and_stale_listing_are_covered_by_the_client_token(
    fake: Fake, provider: AwsProvider
) -> None:
    """As above, and DescribeInstances does not show the new instance yet (EC2 is
    eventually consistent), so only ClientToken prevents a second instance."""
    fake.honour_client_tokens()
    node = make_node(fake)
    lost: list[str] = []

    def lose_the_answer(parsed: dict[str, Any], **_: Any) -> None:
        if not lost:
            lost.append(parsed["Instances"][0]["InstanceId"])
            raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    fake.on("after-call.ec2.RunInstances", lose_the_answer)
    fake.on("before-call.ec2.DescribeInstances", lambda **_: _ok({"Reservations": []}))

    with pytest.raises(TransientCloudError):
        launch(provider, node)
    instance = launch(provider, node)

    assert instance.instance_id == lost[0]
    assert len(fake.instances()) == 1
    tokens = [p["ClientToken"] for p in fake.params("RunInstances")]
    assert tokens == [idempotency_key(node.node_id)] * 2


def test_every_run_instances_carries_the_nodes_idempotency_key(
    fake: Fake, provider: AwsProvider
) -> None:
    nodes = [make_node(fake) for _ in range(3)]
    for node in nodes:
        launch(provider, node)

    tokens = [p["ClientToken"] for p in fake.params("RunInstances")]
    assert tokens == [idempotency_key(n.node_id) for n in nodes]


def test_launch_refuses_oversized_boot_script_without_calling_aws(
    fake: Fake, provider: AwsProvider
) -> None:
    node = make_node(fake)
    with pytest.raises(PermanentCloudError) as caught:
        provider.launch(node=node, boot_script="x" * 20_000, idempotency_key="k" * 10)
    assert caught.value.kind == PermanentErrorKind.INVALID_REQUEST
    assert fake.params("RunInstances") == []


# --- List, describe, terminate ---------------------------------------------------------


def test_list_instances_by_cluster(fake: Fake, provider: AwsProvider) -> None:
    blue, green = uuid.uuid4(), uuid.uuid4()
    blue_nodes = [make_node(fake, blue) for _ in range(2)]
    green_node = make_node(fake, green)
    for node in [*blue_nodes, green_node]:
        launch(provider, node)
    # Someone else's instance in the same account: never listed.
    fake.ec2.run_instances(ImageId=fake.image, InstanceType="t3.micro", MinCount=1, MaxCount=1)

    listed = provider.list_instances(cluster_id=blue)

    assert {i.node_id for i in listed} == {n.node_id for n in blue_nodes}
    assert {i.cluster_id for i in listed} == {blue}
    assert len(provider.list_instances()) == 3
    assert [i.node_id for i in provider.list_instances(cluster_id=green)] == [green_node.node_id]


def test_list_instances_is_paginated(fake: Fake, provider: AwsProvider) -> None:
    node = make_node(fake)
    launch(provider, node)
    pages = [
        {"Reservations": [{"Instances": [{"InstanceId": "i-1", "State": {"Name": "running"}}]}]},
        {"Reservations": [{"Instances": [{"InstanceId": "i-2", "State": {"Name": "stopped"}}]}]},
    ]
    pages[0]["NextToken"] = "page-2"
    fake.on("before-call.ec2.DescribeInstances", lambda **_: _ok(pages.pop(0)))

    listed = provider.list_instances()

    assert [(i.instance_id, i.state) for i in listed] == [
        ("i-1", InstanceState.RUNNING),
        ("i-2", InstanceState.STOPPED),
    ]


def test_describe(fake: Fake, provider: AwsProvider) -> None:
    node = make_node(fake)
    launched = launch(provider, node)

    found = provider.describe(instance_id=launched.instance_id)

    assert found is not None
    assert found.instance_id == launched.instance_id
    assert found.node_id == node.node_id
    assert found.private_address
    assert found.launched_at is not None
    assert provider.describe(instance_id="i-0123456789abcdef0") is None


def test_terminate(fake: Fake, provider: AwsProvider) -> None:
    instance = launch(provider, make_node(fake))

    provider.terminate(instance_id=instance.instance_id)
    provider.terminate(instance_id=instance.instance_id)  # already terminated: fine
    provider.terminate(instance_id="i-0123456789abcdef0")  # never existed: fine

    found = provider.describe(instance_id=instance.instance_id)
    assert found is not None
    assert found.state == InstanceState.TERMINATED
    assert not found.is_live
    assert len(fake.params("TerminateInstances")) == 1


def test_terminate_of_missing_instance_racing_is_fine(fake: Fake, provider: AwsProvider) -> None:
    instance = launch(provider, make_node(fake))
    fake.fail("ec2.TerminateInstances", "InvalidInstanceID.NotFound")

    provider.terminate(instance_id=instance.instance_id)


@pytest.mark.parametrize("tag", [None, "another-cloud"])
def test_terminate_refuses_instances_that_are_not_ours(
    fake: Fake, provider: AwsProvider, tag: str | None
) -> None:
    tags = [{"ResourceType": "instance", "Tags": [{"Key": TAG_CLOUD, "Value": tag}]}]
    (foreign,) = fake.ec2.run_instances(
        ImageId=fake.image,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        **({"TagSpecifications": tags} if tag else {}),
    )["Instances"]

    with pytest.raises(PermanentCloudError) as caught:
        provider.terminate(instance_id=foreign["InstanceId"])

    assert caught.value.kind == PermanentErrorKind.PERMISSION
    assert foreign["InstanceId"] in caught.value.user_message
    assert fake.params("TerminateInstances") == []
    (data,) = fake.instances()
    assert data["State"]["Name"] in ("pending", "running")


# --- Error mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "kind", "says"),
    [
        (
            "InsufficientInstanceCapacity",
            500,
            PermanentErrorKind.CAPACITY,
            "m5.large in us-east-1b",
        ),
        ("InsufficientCapacity", 400, PermanentErrorKind.CAPACITY, "try another zone"),
        ("VcpuLimitExceeded", 400, PermanentErrorKind.QUOTA, "Service Quotas"),
        ("InstanceLimitExceeded", 400, PermanentErrorKind.QUOTA, "quota increase"),
        ("MaxSpotInstanceCountExceeded", 400, PermanentErrorKind.QUOTA, "Service Quotas"),
        ("UnauthorizedOperation", 403, PermanentErrorKind.PERMISSION, "ec2:RunInstances"),
        ("AccessDenied", 403, PermanentErrorKind.PERMISSION, "ec2:RunInstances"),
        ("AccessDeniedException", 403, PermanentErrorKind.PERMISSION, ROLE_ARN),
        ("InvalidAMIID.NotFound", 400, PermanentErrorKind.INVALID_IMAGE, "ami-"),
        ("InvalidAMIID.Malformed", 400, PermanentErrorKind.INVALID_IMAGE, "us-east-1"),
        ("InvalidParameterValue", 400, PermanentErrorKind.INVALID_REQUEST, "ec2:RunInstances"),
    ],
)
def test_permanent_errors(
    fake: Fake,
    provider: AwsProvider,
    code: str,
    status: int,
    kind: PermanentErrorKind,
    says: str,
) -> None:
    # InsufficientInstanceCapacity really is a 500: the code must win over the status.
    fake.fail("ec2.RunInstances", code, status)

    with pytest.raises(PermanentCloudError) as caught:
        launch(provider, make_node(fake, zone="us-east-1b"))

    assert caught.value.kind == kind
    assert says in caught.value.user_message
    assert code in caught.value.detail


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("RequestLimitExceeded", 503),
        ("Throttling", 400),
        ("ThrottlingException", 400),
        ("InternalError", 500),
        ("ServiceUnavailable", 503),
        ("Unavailable", 503),
        ("SomethingNew", 502),
    ],
)
def test_transient_errors(fake: Fake, provider: AwsProvider, code: str, status: int) -> None:
    fake.fail("ec2.RunInstances", code, status)

    with pytest.raises(TransientCloudError):
        launch(provider, make_node(fake))


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
        ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
    ],
)
def test_network_failures_are_transient(fake: Fake, provider: AwsProvider, exc: Exception) -> None:
    fake.raise_("ec2.DescribeInstances", exc)

    with pytest.raises(TransientCloudError) as caught:
        provider.list_instances()
    assert "us-east-1" in caught.value.user_message


def test_errors_on_other_operations_name_their_action(fake: Fake, provider: AwsProvider) -> None:
    fake.fail("ec2.TerminateInstances", "UnauthorizedOperation", 403)
    instance = launch(provider, make_node(fake))

    with pytest.raises(PermanentCloudError) as caught:
        provider.terminate(instance_id=instance.instance_id)
    assert "ec2:TerminateInstances" in caught.value.user_message


# --- Verification ----------------------------------------------------------------------


def _checks(provider: AwsProvider) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.passed, c.message) for c in provider.verify()}


def test_verify_passes(fake: Fake) -> None:
    fake.s3.create_bucket(Bucket=BUCKET)
    provider = make_provider(fake, log_location=f"s3://{BUCKET}/ray")

    checks = _checks(provider)

    assert list(checks) == [
        "Assume role",
        "Describe regions",
        "Describe instances",
        "Log bucket",
        "Log bucket CORS",
    ]
    assert all(passed for passed, _ in checks.values()), checks
    (head,) = fake.params("HeadBucket")
    assert head == {"Bucket": BUCKET, "ExpectedBucketOwner": ACCOUNT}


def test_verify_without_log_location_skips_the_bucket(provider: AwsProvider) -> None:
    checks = _checks(provider)

    assert checks["Log bucket"][0]
    assert "No log bucket is configured" in checks["Log bucket"][1]


def test_verify_always_assumes_the_role_afresh(fake: Fake, provider: AwsProvider) -> None:
    provider.list_instances()  # cached
    fake.iam.update_assume_role_policy(
        RoleName=ROLE_NAME, PolicyDocument=_trust_policy(OTHER_EXTERNAL_ID)
    )

    checks = _checks(provider)

    assert not checks["Assume role"][0]
    assert (ROLE_ARN, EXTERNAL_ID) not in aws_driver._CACHE


NOT_CHECKED = "Not checked: the role could not be assumed."


def test_verify_missing_role(fake: Fake) -> None:
    # Real AWS answers AccessDenied for a role that does not exist; enforce_trust too.
    missing = f"arn:aws:iam::{ACCOUNT}:role/not-created"
    provider = make_provider(fake, role_arn=missing)

    checks = _checks(provider)

    passed, message = checks["Assume role"]
    assert not passed
    assert missing in message
    assert "trust policy" in message
    assert "ExternalId" in message
    for name in ("Describe regions", "Describe instances", "Log bucket", "Log bucket CORS"):
        assert checks[name] == (False, NOT_CHECKED)
    assert fake.params("DescribeRegions") == []


def test_verify_role_reported_as_no_such_entity(fake: Fake, provider: AwsProvider) -> None:
    fake.fail("sts.AssumeRole", "NoSuchEntity", 404)

    passed, message = _checks(provider)["Assume role"]

    assert not passed
    assert f"The role {ROLE_ARN} does not exist" in message


def test_verify_malformed_role_arn(fake: Fake, provider: AwsProvider) -> None:
    fake.fail("sts.AssumeRole", "ValidationError", 400)

    passed, message = _checks(provider)["Assume role"]

    assert not passed
    assert "is not a valid role ARN" in message


def test_verify_wrong_external_id(fake: Fake) -> None:
    provider = make_provider(fake, external_id=OTHER_EXTERNAL_ID)

    checks = _checks(provider)

    passed, message = checks["Assume role"]
    assert not passed
    assert ROLE_ARN in message
    assert "sts:ExternalId" in message
    assert checks["Describe instances"] == (False, NOT_CHECKED)
    assert [p["ExternalId"] for p in fake.params("AssumeRole")] == [OTHER_EXTERNAL_ID]


def test_verify_missing_bucket(fake: Fake) -> None:
    provider = make_provider(fake, log_location=f"s3://{BUCKET}/ray")

    checks = _checks(provider)

    assert checks["Assume role"][0]
    assert checks["Describe instances"][0]
    passed, message = checks["Log bucket"]
    assert not passed
    assert f"bucket {BUCKET} does not exist in this account" in message


def test_verify_bucket_forbidden(fake: Fake) -> None:
    fake.s3.create_bucket(Bucket=BUCKET)
    fake.fail("s3.HeadBucket", "403", 403)
    provider = make_provider(fake, log_location=f"s3://{BUCKET}/ray")

    passed, message = _checks(provider)["Log bucket"]

    assert not passed
    assert "s3:ListBucket" in message
    assert BUCKET in message


# The console's log page reads a page of a stored log straight from the bucket, from the
# console's origin: the bucket's CORS rules must allow it (static/console/console.js).
RAYDECK_RULE = {
    "ID": "raydeck-console",
    "AllowedOrigins": [CONSOLE],
    "AllowedMethods": ["GET"],
    "AllowedHeaders": ["Range"],
    "ExposeHeaders": ["Content-Range", "Content-Length"],
    "MaxAgeSeconds": 3600,
}
CUSTOMER_RULE = {
    "ID": "uploads",
    "AllowedOrigins": ["https://app.customer.example"],
    "AllowedMethods": ["PUT"],
    "AllowedHeaders": ["*"],
}


def _bucket_rules(fake: Fake) -> list[dict[str, Any]]:
    return fake.s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"]


def test_verify_adds_raydecks_cors_rule_to_a_bucket_without_one(fake: Fake) -> None:
    fake.s3.create_bucket(Bucket=BUCKET)
    provider = make_provider(fake, log_location=f"s3://{BUCKET}/ray")

    [cors] = [c for c in provider.verify() if c.name == "Log bucket CORS"]

    assert cors.passed, cors.message
    assert "added the CORS rule raydeck-console" in cors.message
    assert cors.change == f"CORS rule raydeck-console of s3://{BUCKET} allows {CONSOLE}"
    assert _bucket_rules(fake) == [RAYDECK_RULE]
    (put,) = fake.params("PutBucketCors")
    assert put["ExpectedBucketOwner"] == ACCOUNT


def test_verify_keeps_the_customers_cors_rules_and_replaces_only_its_own(fake: Fake) -> None:
    fake.s3.create_bucket(Bucket=BUCKET)
    moved = {**RAYDECK_RULE, "AllowedOrigins": ["https://old-console.example.com"]}
    fake.s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": [CUSTOMER_RULE, moved]})
    provider = make_provider(fake, log_location=f"s3://{BUCKET}/ray")

    checks = _checks(provider)

    assert checks["Log bucket CORS"][0], checks
    assert _bucket_rules(fake) == [CUSTOMER_RULE, RAYDECK_RULE]


@pytest.mark.parametrize(
    "rules",
    [
        [RAYDECK_RULE],  # a verification before added it
        [  # the customer's own rule already allows any origin's ranged reads
            {
                "AllowedOrigins": ["*"],
                "AllowedMethods": ["GET", "HEAD"],
                "AllowedHeaders": ["*"],
                "ExposeHeaders": ["content-range", "content-length", "ETag"],
            }
        ],
    ],
)
def test_verify_writes_nothing_when_a_rule_already_allows_the_console(
    fake: Fake, rules: list[dict[str, Any]]
) -> None:
    fake.s3.create_bucket(Bucket=BUCKET)
    fake.s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": rules})
    provider = make_provider(fake, log_location=f"s3://{BUCKET}/ray")

    [cors] = [c for c in provider.verify() if c.name == "Log bucket CORS"]

    assert cors.passed and cors.change == ""
    assert "let the console" in cors.message
    assert fake.params("PutBucketCors") == []
    assert _bucket_rules(fake) == rules


@pytest.mark.parametrize(
    ("denied", "advice"),
    [
        (
            "PutBucketCors",
            [
                f"add s3:PutBucketCORS on arn:aws:s3:::{BUCKET} to the role's permissions",
                json.dumps(RAYDECK_RULE),  # or the rule to set by hand
            ],
        ),
        (
            "GetBucketCors",
            [
                "not allowed s3:GetBucketCORS",
                f"s3:GetBucketCORS and s3:PutBucketCORS on arn:aws:s3:::{BUCKET}",
            ],
        ),
    ],
)
def test_verify_without_a_cors_permission_says_what_to_add(
    fake: Fake, denied: str, advice: list[str]
) -> None:
    fake.s3.create_bucket(Bucket=BUCKET)
    fake.s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": [CUSTOMER_RULE]})
    fake.fail(f"s3.{denied}", "AccessDenied", 403)
    provider = make_provider(fake, log_location=f"s3://{BUCKET}/ray")

    checks = _checks(provider)

    assert checks["Log bucket"][0]
    passed, message = checks["Log bucket CORS"]
    assert not passed
    assert all(words in message for words in advice), message
    assert _bucket_rules(fake) == [CUSTOMER_RULE]


def test_verify_does_not_check_cors_of_a_bucket_it_cannot_reach(fake: Fake) -> None:
    provider = make_provider(fake, log_location=f"s3://{BUCKET}/ray")  # no such bucket

    checks = _checks(provider)

    assert not checks["Log bucket"][0]
    assert checks["Log bucket CORS"] == (False, "Not checked: the log bucket could not be reached.")
    assert fake.params("GetBucketCors") == []


def test_verify_describe_instances_denied(fake: Fake, provider: AwsProvider) -> None:
    fake.fail("ec2.DescribeInstances", "UnauthorizedOperation", 403)

    checks = _checks(provider)

    assert checks["Describe regions"][0]
    passed, message = checks["Describe instances"]
    assert not passed
    assert "ec2:DescribeInstances" in message


def test_verify_region_not_enabled(fake: Fake) -> None:
    # moto reports the opt-in regions (ap-east-1 among them) as not opted in.
    provider = make_provider(fake, region="ap-east-1")

    passed, message = _checks(provider)["Describe regions"]

    assert not passed
    assert "ap-east-1 is not enabled" in message


def test_verify_unknown_region(fake: Fake, provider: AwsProvider) -> None:
    fake.on(
        "before-call.ec2.DescribeRegions",
        lambda **_: _ok({"Regions": [{"RegionName": "eu-west-1"}]}),
    )

    passed, message = _checks(provider)["Describe regions"]

    assert not passed
    assert "us-east-1 is not an EC2 region" in message


# --- No credential anywhere ------------------------------------------------------------


def test_redact_scrubs_assume_role_bodies() -> None:
    body = (
        "b'<AssumeRoleResponse><Credentials><AccessKeyId>ASIA1</AccessKeyId>"
        "<SecretAccessKey>s3cr3t/key+</SecretAccessKey><SessionToken>t0k3n==</SessionToken>"
    )
    parsed = "{'SecretAccessKey': 's3cr3t/key+', 'SessionToken': 't0k3n=='}"
    header = "'X-Amz-Security-Token': b't0k3n=='"

    for text in (body, parsed, header):
        clean = aws_driver.redact(text)
        assert "s3cr3t" not in clean
        assert "t0k3n" not in clean


def test_no_credential_in_messages_exceptions_or_logs(fake: Fake, logs: list[str]) -> None:
    fake.s3.create_bucket(Bucket=BUCKET)
    provider = make_provider(fake, log_location=f"s3://{BUCKET}/ray")
    texts: list[str] = []
    node = make_node(fake)

    texts += [c.message for c in provider.verify()]
    instance = launch(provider, node)
    provider.list_instances(cluster_id=node.cluster_id)
    provider.describe(instance_id=instance.instance_id)
    provider.terminate(instance_id=instance.instance_id)

    failures: list[Callable[[], Any]] = [
        lambda: launch(make_provider(fake), make_node(fake)),
        lambda: make_provider(fake).list_instances(),
        lambda: make_provider(fake).terminate(instance_id=instance.instance_id),
    ]
    fake.fail("ec2.RunInstances", "UnauthorizedOperation", 403)
    fake.fail("ec2.DescribeInstances", "Throttling", 400)
    fake.fail("ec2.TerminateInstances", "InternalError", 500)
    for failure in failures:
        with pytest.raises(CloudError) as caught:
            failure()
        exc = caught.value
        texts += [str(exc), exc.user_message, exc.detail, repr(exc), str(exc.__cause__)]
        logging.getLogger("raydeck.test").exception("failed", exc_info=exc)
    texts += [c.message for c in make_provider(fake, external_id=OTHER_EXTERNAL_ID).verify()]
    texts.append(repr(aws_driver._CACHE))

    secrets = fake.secrets()
    assert len(secrets) >= 2
    assert any("SecretAccessKey" in line for line in logs)  # botocore did log the body...
    haystack = "\n".join(texts + logs)
    for secret in secrets:
        assert secret not in haystack  # ...but never a value
