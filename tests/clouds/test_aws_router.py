"""The AWS service router against moto (the stand-in for AWS, in-process, as in
test_aws_driver.py): a service's Application Load Balancer, its target groups and its
weighted listener rule are created, re-weighted, drained and deleted through the real
driver and boto3. moto does not model a deregistration delay, so the one test of a
draining target answers DescribeTargetHealth as AWS does during one (a botocore hook)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography import x509

from clouds import policies
from clouds.choices import CloudKind
from clouds.models import Cloud
from clouds.providers import aws_firewall, aws_router
from clouds.providers.aws import AwsProvider
from clouds.providers.base import (
    TAG_CLOUD,
    Backend,
    EndpointSigner,
    FirewallSpec,
    PermanentCloudError,
    PermanentErrorKind,
    TransientCloudError,
)
from clusters.certificates import endpoint_certificate, trust_bundle_pem
from tests.clouds.test_aws_driver import (
    Fake,
    _error,
    _ok,
    aws,
    fake,
    make_provider,
)

__all__ = ["aws", "fake"]  # the fixtures: moto (autouse) and its session
pytestmark = pytest.mark.django_db  # the installation's CA signs the endpoints' certificates
SERVICE = uuid.UUID("99999999-8888-7777-6666-555555555555")
FIREWALL = FirewallSpec(gateway_port=8443, gateway_cidrs=("203.0.113.0/24",))


@pytest.fixture
def sign() -> EndpointSigner:
    """What the rollout passes: the installation's CA signing for the endpoint's name."""
    return endpoint_certificate


@pytest.fixture
def provider(fake: Fake) -> AwsProvider:
    return make_provider(fake, firewall=FIREWALL)


def _backends(plain: frozenset[str] = frozenset(), **weights: int) -> list[Backend]:
    """v1 on 10.0.1.1, v2 on 10.0.1.2, ...; a negative weight is a draining version; the
    heads of versions in `plain` speak plain HTTP (an agent from before TLS to the head)."""
    return [
        Backend(
            name=name,
            address=f"10.0.1.{name[1:]}",
            port=8000,
            weight=max(weight, 0),
            draining=weight < 0,
            tls=name not in plain,
        )
        for name, weight in weights.items()
    ]


class Account:
    """What the account holds for the service, read with the test's own clients."""

    def __init__(self, fake: Fake) -> None:
        self.ec2 = fake.ec2
        self.elb = fake.session.client("elbv2")
        self.acm = fake.session.client("acm")

    def load_balancers(self) -> list[dict[str, Any]]:
        return self.elb.describe_load_balancers()["LoadBalancers"]

    def listeners(self) -> dict[int, dict[str, Any]]:
        lb = self.load_balancers()[0]["LoadBalancerArn"]
        found = self.elb.describe_listeners(LoadBalancerArn=lb)["Listeners"]
        return {listener["Port"]: listener for listener in found}

    def certificates(self) -> list[str]:
        """The ACM certificates tagged with the service."""
        summaries = self.acm.list_certificates()["CertificateSummaryList"]
        return [
            c["CertificateArn"]
            for c in summaries
            if {"Key": aws_router.TAG_SERVICE, "Value": str(SERVICE)}
            in self.acm.list_tags_for_certificate(CertificateArn=c["CertificateArn"])["Tags"]
        ]

    def target_groups(self) -> dict[str, str]:
        return {
            g["TargetGroupArn"]: g["TargetGroupName"]
            for g in self.elb.describe_target_groups()["TargetGroups"]
        }

    def targets(self, version: str) -> list[tuple[str, int]]:
        arn = next(a for a, n in self.target_groups().items() if n.endswith(f"-{version}"))
        health = self.elb.describe_target_health(TargetGroupArn=arn)
        return [
            (t["Target"]["Id"], t["Target"]["Port"]) for t in health["TargetHealthDescriptions"]
        ]

    def weights(self) -> dict[str, int] | None:
        """The forward rule's weights by version, None when there is no rule."""
        listener = self.listeners()[443]
        rules = [
            r
            for r in self.elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
            if not r["IsDefault"]
        ]
        if not rules:
            return None
        names = self.target_groups()
        forward = rules[0]["Actions"][0]["ForwardConfig"]["TargetGroups"]
        return {names[t["TargetGroupArn"]].rsplit("-", 1)[1]: t["Weight"] for t in forward}

    def protocols(self) -> dict[str, tuple[str, str]]:
        """Each target group's (traffic, health check) protocol."""
        return {
            g["TargetGroupName"]: (g["Protocol"], g["HealthCheckProtocol"])
            for g in self.elb.describe_target_groups()["TargetGroups"]
        }

    def router_groups(self) -> list[dict[str, Any]]:
        return self.ec2.describe_security_groups(
            Filters=[{"Name": f"tag:{aws_router.TAG_SERVICE}", "Values": [str(SERVICE)]}]
        )["SecurityGroups"]

    def node_ports(self) -> set[int]:
        """The ports the cloud's nodes accept from the router's group."""
        nodes = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [aws_firewall.group_name(_cloud())]}]
        )["SecurityGroups"][0]
        return aws_firewall.router_ports(
            self.ec2, nodes["GroupId"], self.router_groups()[0]["GroupId"]
        )


def _cloud() -> uuid.UUID:
    return uuid.UUID("11111111-2222-3333-4444-555555555555")  # make_provider's


def test_create_reweight_drain_remove(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner
) -> None:
    router = provider.router()
    account = Account(fake)
    endpoint = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign)
    lb = account.load_balancers()
    assert [b["LoadBalancerName"] for b in lb] == [aws_router.lb_name(SERVICE)]
    assert endpoint.url == f"https://{lb[0]['DNSName']}"
    assert lb[0]["Scheme"] == "internet-facing"
    # HTTPS with a certificate of the installation's CA for the ALB's name; HTTP only
    # redirects there.
    listeners = account.listeners()
    assert (listeners[443]["Protocol"], listeners[443]["SslPolicy"]) == (
        "HTTPS",
        aws_router.SSL_POLICY,
    )
    [arn] = account.certificates()
    assert listeners[443]["Certificates"] == [{"CertificateArn": arn}]
    served = account.acm.get_certificate(CertificateArn=arn)
    leaf = x509.load_pem_x509_certificate(served["Certificate"].encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [lb[0]["DNSName"]]
    ca = x509.load_pem_x509_certificate(trust_bundle_pem().encode())
    leaf.verify_directly_issued_by(ca)
    assert [a["Type"] for a in listeners[80]["DefaultActions"]] == ["redirect"]
    assert listeners[80]["DefaultActions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"
    ingress = {p["FromPort"] for p in account.router_groups()[0]["IpPermissions"]}
    assert ingress == {80, 443}
    router.ensure_endpoint(service_id=SERVICE, ref=endpoint.ref, sign=sign)
    assert account.certificates() == [arn]  # not imported again while it lasts
    tags = account.elb.describe_tags(ResourceArns=[lb[0]["LoadBalancerArn"]])
    assert {"Key": TAG_CLOUD, "Value": str(_cloud())} in tags["TagDescriptions"][0]["Tags"]
    assert account.weights() is None  # nothing to forward to: the listener's 503

    router.set_backends(ref=endpoint.ref, backends=_backends(v1=100))
    assert account.weights() == {"v1": 100}
    assert account.targets("v1") == [("10.0.1.1", 8000)]
    assert account.node_ports() == {8000}  # the nodes let the load balancer in
    # The hop to the head is TLS too (its serve gate), health checks included.
    assert account.protocols() == {aws_router.target_group_name(SERVICE, "v1"): ("HTTPS", "HTTPS")}

    router.set_backends(ref=endpoint.ref, backends=_backends(v1=90, v2=10))
    assert account.weights() == {"v1": 90, "v2": 10}
    writes = [name for name, _ in fake.calls if not name.startswith("Describe")]
    router.set_backends(ref=endpoint.ref, backends=_backends(v1=90, v2=10))  # the same again
    assert [name for name, _ in fake.calls if not name.startswith("Describe")] == writes
    router.set_backends(ref=endpoint.ref, backends=_backends(v1=0, v2=100))
    assert account.weights() == {"v1": 0, "v2": 100}

    # Draining: weight 0 and the target deregistered (AWS lets requests in flight finish).
    router.set_backends(ref=endpoint.ref, backends=_backends(v1=-1, v2=100))
    assert account.weights() == {"v1": 0, "v2": 100}
    assert account.targets("v1") == []
    assert account.targets("v2") == [("10.0.1.2", 8000)]

    # A stopped version leaves the router: its target group goes.
    router.set_backends(ref=endpoint.ref, backends=_backends(v2=100))
    assert account.weights() == {"v2": 100}
    assert sorted(account.target_groups().values()) == [aws_router.target_group_name(SERVICE, "v2")]

    router.set_token_hashes(ref=endpoint.ref, token_hashes=["a" * 64])  # the heads check
    router.remove(ref=endpoint.ref)
    assert account.load_balancers() == []
    assert account.target_groups() == {}
    assert account.router_groups() == []
    assert account.certificates() == []
    router.remove(ref=endpoint.ref)  # gone already: fine


def test_a_head_that_moves_is_re_registered(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner
) -> None:
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(v1=100))
    moved = [Backend(name="v1", address="10.0.9.9", port=8001, weight=100)]
    router.set_backends(ref=ref, backends=moved)
    assert Account(fake).targets("v1") == [("10.0.9.9", 8001)]
    assert Account(fake).node_ports() == {8001}


def test_the_cloud_firewall_keeps_the_router_rules(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner
) -> None:
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(v1=100))
    provider.ensure_firewall()  # brings the nodes' group in line with the cloud
    assert Account(fake).node_ports() == {8000}


def test_in_flight_while_the_target_drains(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner
) -> None:
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(v1=-1, v2=100))
    assert router.in_flight(ref=ref, backend="v1") == 0  # moto: deregistered at once
    assert router.in_flight(ref=ref, backend="v9") == 0  # no such version

    draining = {
        "TargetHealthDescriptions": [
            {
                "Target": {"Id": "10.0.1.1", "Port": 8000},
                "TargetHealth": {"State": "draining", "Reason": "Target.DeregistrationInProgress"},
            }
        ]
    }
    fake.on("before-call.elastic-load-balancing-v2.DescribeTargetHealth", lambda **_: _ok(draining))
    assert router.in_flight(ref=ref, backend="v1") == 1


def test_a_run_that_crashed_half_way_is_finished(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner
) -> None:
    """The first CreateListener fails after the load balancer exists, and a target group
    is made before its rule: the next calls find both by name and make nothing twice."""
    router = provider.router()
    fake.on(
        "before-call.elastic-load-balancing-v2.CreateListener",
        _once(lambda: _error("ServiceUnavailable", 503)),
    )
    with pytest.raises(TransientCloudError):
        router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign)
    fake.on(
        "before-call.elastic-load-balancing-v2.CreateRule",
        _once(lambda: _error("InternalFailure", 500)),
    )
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    with pytest.raises(TransientCloudError):
        router.set_backends(ref=ref, backends=_backends(v1=100))
    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    router.set_backends(ref=ref, backends=_backends(v1=100))

    account = Account(fake)
    assert len(account.load_balancers()) == 1
    assert len(account.router_groups()) == 1
    assert list(account.target_groups().values()) == [aws_router.target_group_name(SERVICE, "v1")]
    assert account.weights() == {"v1": 100}
    assert len(fake.params("CreateLoadBalancer")) == 1


def test_errors_say_what_to_do(provider: AwsProvider, fake: Fake, sign: EndpointSigner) -> None:
    router = provider.router()
    fake.fail("elastic-load-balancing-v2.CreateLoadBalancer", "AccessDenied", 403)
    with pytest.raises(PermanentCloudError) as denied:
        router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign)
    assert denied.value.kind == PermanentErrorKind.PERMISSION
    assert "elasticloadbalancing:CreateLoadBalancer" in denied.value.user_message

    fake2 = Fake()
    other = make_provider(fake2, firewall=FIREWALL)
    fake2.fail("elastic-load-balancing-v2.CreateLoadBalancer", "TooManyLoadBalancers")
    with pytest.raises(PermanentCloudError) as limit:
        other.router().ensure_endpoint(service_id=SERVICE, ref={}, sign=sign)
    assert limit.value.kind == PermanentErrorKind.QUOTA
    assert "load balancer limit" in limit.value.user_message

    with pytest.raises(PermanentCloudError, match="damaged"):
        router.set_backends(ref={"service_id": "nonsense"}, backends=[])


def test_no_default_vpc_is_a_clear_refusal(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner
) -> None:
    vpc = fake.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    fake.on(
        "before-call.ec2.DescribeVpcs",
        lambda **_: _ok({"Vpcs": []}),
    )
    with pytest.raises(PermanentCloudError, match="no default VPC") as refused:
        provider.router().ensure_endpoint(service_id=SERVICE, ref={}, sign=sign)
    assert refused.value.kind == PermanentErrorKind.INVALID_REQUEST
    assert vpc["VpcId"]  # moto's account has one: the refusal came from the answer
    assert Account(fake).load_balancers() == []


def _once(answer: Any) -> Any:
    """A before-call handler that fails the first call only (a crash mid-way)."""
    done: list[bool] = []

    def handler(**_: Any) -> Any:
        if done:
            return None
        done.append(True)
        return answer()

    return handler


def test_the_setup_policy_grants_every_call_the_router_makes(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call of a service's whole life is an action the cloud's setup page grants."""
    called: set[str] = set()

    def record(model: Any, **_: Any) -> None:
        called.add(f"{model.service_model.signing_name}:{model.name}")

    fake.on("provide-client-params", record)
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    monkeypatch.setattr(aws_router, "ENDPOINT_RENEW_BEFORE_SECONDS", 10**9)  # renew it
    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    router.set_backends(ref=ref, backends=_backends(v1=100))
    router.set_backends(ref=ref, backends=_backends(v1=-1, v2=100))
    router.in_flight(ref=ref, backend="v1")
    router.set_backends(ref=ref, backends=_backends(v2=100))
    router.remove(ref=ref)

    policy = policies.aws_permissions_policy(Cloud(kind=CloudKind.AWS, region="us-east-1"))
    granted = {
        action
        for s in policy["Statement"]
        for action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    called -= {"sts:AssumeRole"}  # Raydeck's own identity, by the role's trust policy
    assert {"elasticloadbalancing:ModifyRule", "acm:ImportCertificate"} <= called
    assert called <= granted, called - granted


def test_the_certificate_is_renewed_in_place_before_it_ends(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint certificate with less than ENDPOINT_RENEW_BEFORE_SECONDS left is
    signed again and re-imported under the same ARN: the listener is untouched."""
    router = provider.router()
    account = Account(fake)
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    [arn] = account.certificates()
    first = account.acm.get_certificate(CertificateArn=arn)["Certificate"]
    monkeypatch.setattr(aws_router, "ENDPOINT_RENEW_BEFORE_SECONDS", 10**9)
    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    assert account.certificates() == [arn]
    assert account.acm.get_certificate(CertificateArn=arn)["Certificate"] != first
    assert account.listeners()[443]["Certificates"] == [{"CertificateArn": arn}]


def test_a_service_made_before_https_moves_to_it(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner
) -> None:
    """A load balancer with only port 80, answering through a rule (Raydeck before
    HTTPS): the next pass adds the HTTPS listener and its rule, and port 80's rule goes
    for a redirect."""
    router = provider.router()
    account = Account(fake)
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(v1=100))
    listeners = account.listeners()
    old = listeners[80]["ListenerArn"]
    account.elb.delete_listener(ListenerArn=listeners[443]["ListenerArn"])
    account.elb.modify_listener(
        ListenerArn=old,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}],
    )
    account.elb.create_rule(
        ListenerArn=old,
        Priority=1,
        Conditions=[{"Field": "path-pattern", "Values": ["/*"]}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}],
    )

    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    router.set_backends(ref=ref, backends=_backends(v1=100))
    listeners = account.listeners()
    assert [a["Type"] for a in listeners[80]["DefaultActions"]] == ["redirect"]
    assert [
        r for r in account.elb.describe_rules(ListenerArn=old)["Rules"] if not r["IsDefault"]
    ] == []
    assert account.weights() == {"v1": 100}
    assert len(account.certificates()) == 1  # the one imported before is used again


def _plain_http_versions(account: Account, **weights: int) -> None:
    """What Raydeck made before TLS to the head: per version an HTTP target group
    (`rd-<16 hex>-v<n>`, HTTP health checks) holding the head, and the listener rule
    forwarding to them by weight."""
    lb = account.load_balancers()[0]
    targets = []
    for backend in _backends(**weights):
        group = account.elb.create_target_group(
            Name=f"rd-{SERVICE.hex[:16]}-{backend.name}",
            Protocol="HTTP",
            Port=backend.port,
            VpcId=lb["VpcId"],
            TargetType="ip",
            HealthCheckProtocol="HTTP",
            HealthCheckPath=aws_router.HEALTH_PATH,
            Tags=[
                {"Key": TAG_CLOUD, "Value": str(_cloud())},
                {"Key": aws_router.TAG_SERVICE, "Value": str(SERVICE)},
            ],
        )["TargetGroups"][0]
        account.elb.register_targets(
            TargetGroupArn=group["TargetGroupArn"],
            Targets=[{"Id": backend.address, "Port": backend.port}],
        )
        targets.append({"TargetGroupArn": group["TargetGroupArn"], "Weight": backend.weight})
    account.elb.create_rule(
        ListenerArn=account.listeners()[443]["ListenerArn"],
        Priority=aws_router.RULE_PRIORITY,
        Conditions=[{"Field": "path-pattern", "Values": ["/*"]}],
        Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": targets}}],
    )


def test_plain_http_target_groups_move_to_https(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner
) -> None:
    """An endpoint whose versions were reached over plain HTTP moves to HTTPS target
    groups on the next pass, keeping its weights; a pass cut off before the rule moved,
    or before the old groups went, is finished by the next one."""
    router = provider.router()
    account = Account(fake)
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    _plain_http_versions(account, v1=90, v2=10)
    assert set(account.protocols().values()) == {("HTTP", "HTTP")}
    assert account.weights() == {"v1": 90, "v2": 10}

    # Cut off after the HTTPS groups were made: the rule still forwards to the old ones.
    fake.on(
        "before-call.elastic-load-balancing-v2.ModifyRule",
        _once(lambda: _error("InternalFailure", 500)),
    )
    with pytest.raises(TransientCloudError):
        router.set_backends(ref=ref, backends=_backends(v1=90, v2=10))
    assert len(account.protocols()) == 4
    assert account.weights() == {"v1": 90, "v2": 10}
    # Cut off after the rule moved, before the old groups went.
    fake.on(
        "before-call.elastic-load-balancing-v2.DeleteTargetGroup",
        _once(lambda: _error("InternalFailure", 500)),
    )
    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    with pytest.raises(TransientCloudError):
        router.set_backends(ref=ref, backends=_backends(v1=90, v2=10))
    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    router.set_backends(ref=ref, backends=_backends(v1=90, v2=10))

    assert account.protocols() == {
        aws_router.target_group_name(SERVICE, "v1"): ("HTTPS", "HTTPS"),
        aws_router.target_group_name(SERVICE, "v2"): ("HTTPS", "HTTPS"),
    }
    assert account.weights() == {"v1": 90, "v2": 10}  # still weighted, as before
    assert account.targets("v1") == [("10.0.1.1", 8000)]
    assert account.targets("v2") == [("10.0.1.2", 8000)]
    made = [p["Name"] for p in fake.params("CreateTargetGroup") if p["Protocol"] == "HTTPS"]
    assert len(made) == 2  # nothing made twice
    router.remove(ref=ref)
    assert account.target_groups() == {}


def test_an_old_plain_version_keeps_http_beside_a_new_https_one(
    provider: AwsProvider, fake: Fake, sign: EndpointSigner
) -> None:
    """After an upgrade of Raydeck, the serving version's head still runs the agent its
    cluster booted with, whose port speaks plain HTTP: its HTTP group stays (HTTPS health
    checks would fail and take it down), the new version gets an HTTPS group, and the one
    rule weights both. A pass cut off before the rule moved is finished by the next; once
    the old version has drained and gone, only HTTPS remains."""
    router = provider.router()
    account = Account(fake)
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    _plain_http_versions(account, v1=100)
    made_before = len(fake.params("CreateTargetGroup"))  # the test's own client's too
    old = {"v1"}
    plain_v1 = aws_router.target_group_name(SERVICE, "v1", tls=False)
    https_v2 = aws_router.target_group_name(SERVICE, "v2")

    router.set_backends(ref=ref, backends=_backends(plain=frozenset(old), v1=100))
    assert account.protocols() == {plain_v1: ("HTTP", "HTTP")}  # left as it was
    assert len(fake.params("CreateTargetGroup")) == made_before

    fake.on(
        "before-call.elastic-load-balancing-v2.ModifyRule",
        _once(lambda: _error("InternalFailure", 500)),
    )
    with pytest.raises(TransientCloudError):
        router.set_backends(ref=ref, backends=_backends(plain=frozenset(old), v1=90, v2=10))
    assert account.weights() == {"v1": 100}  # the old version still serves everything
    router.set_backends(ref=ref, backends=_backends(plain=frozenset(old), v1=90, v2=10))
    assert account.protocols() == {plain_v1: ("HTTP", "HTTP"), https_v2: ("HTTPS", "HTTPS")}
    assert account.weights() == {"v1": 90, "v2": 10}
    assert account.targets("v1") == [("10.0.1.1", 8000)]
    assert account.targets("v2") == [("10.0.1.2", 8000)]
    made = [p["Name"] for p in fake.params("CreateTargetGroup")[made_before:]]
    assert made == [https_v2]  # once

    router.set_backends(ref=ref, backends=_backends(plain=frozenset(old), v1=-1, v2=100))
    assert account.weights() == {"v1": 0, "v2": 100}
    assert account.protocols()[plain_v1] == ("HTTP", "HTTP")  # drains where it served
    draining = {
        "TargetHealthDescriptions": [
            {"Target": {"Id": "10.0.1.1", "Port": 8000}, "TargetHealth": {"State": "draining"}}
        ]
    }
    fake.on(
        "before-call.elastic-load-balancing-v2.DescribeTargetHealth",
        _once(lambda: _ok(draining)),
    )
    assert router.in_flight(ref=ref, backend="v1") == 1  # its plain group is the one asked

    router.set_backends(ref=ref, backends=_backends(v2=100))
    assert account.protocols() == {https_v2: ("HTTPS", "HTTPS")}
    assert account.weights() == {"v2": 100}
