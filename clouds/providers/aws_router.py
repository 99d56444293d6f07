"""The AWS service router (AwsProvider.router()): one Application Load Balancer per service.

Per service, each named after it (`rd-<first 20 hex digits of its uuid>`: ELB names are
at most 32 characters) and tagged with the cloud and the service:
- a security group `raydeck-router-<service uuid>` in the region's default VPC (the
  cloud's nodes' VPC, aws_firewall.py) that lets in HTTPS and HTTP from anywhere; the
  nodes' group gets one rule per backend port from this group only (described
  ROUTER_RULE, which aws_firewall.ensure leaves alone);
- an internet-facing ALB in the default VPC's default subnets, with an HTTPS listener
  (443) whose default action answers 503 (no version serves yet), and an HTTP listener
  (80) that only redirects to HTTPS;
- the HTTPS listener's certificate, for the ALB's DNS name, signed by the installation's
  CA (the caller's `sign`) and imported into ACM tagged with the cloud and the service;
  imported again in place (the same ARN) once it has less than
  ENDPOINT_RENEW_BEFORE_SECONDS to live;
- one target group per version (target type ip) holding the version head's private
  address and port, health-checked on Serve's `/-/healthz`, in the protocol the head's
  port speaks (`Backend.tls`): HTTPS (`rdt-<16 hex>-v<n>`) to a head whose serve gate
  speaks TLS with the head's own certificate (serve_gate.py), plain HTTP (`rd-<16
  hex>-v<n>`) to a head booted with an agent from before that, which would fail HTTPS
  health checks. An ALB does not verify a target's certificate: the hop is encrypted,
  and only the ALB's group may reach the port. Old and new versions of one service are
  weighted in the same rule whatever their protocols. A target group's protocol cannot
  change: a version whose head changed protocol (replaced by one with a newer agent)
  gets a group of the other name, the rule moves to it, then the old group goes;
- one listener rule (`/*`) forwarding to the versions' target groups by weight.

A draining version keeps weight 0 in the rule and its target is deregistered: the ALB
sends it nothing new and lets requests in flight finish for DEREGISTRATION_DELAY
seconds, during which `in_flight` reports it busy (the ALB does not count requests).

Everything is found again by name on every call (the caller's `ref` holds only the
service's id), so a call interrupted half-way is finished by the next one. The query
token is not checked here (an ALB cannot hash a header): see docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from . import aws_firewall
from .base import (
    ENDPOINT_RENEW_BEFORE_SECONDS,
    TAG_CLOUD,
    Backend,
    Endpoint,
    EndpointSigner,
    PermanentCloudError,
    PermanentErrorKind,
    TransientCloudError,
    router_service_id,
)

if TYPE_CHECKING:
    from .aws import AwsProvider

TAG_SERVICE = "raydeck-service"
LISTENER_PORT = 443
REDIRECT_PORT = 80  # plain HTTP only answers with a redirect to HTTPS
# TLS 1.2 and 1.3 only (DESIGN.md: TLS 1.2+ on every channel).
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
HEALTH_PATH = "/-/healthz"  # Serve's proxy answers 200 once it routes
# Longer than a Serve request usually takes, well inside the rollout's drain timeout.
DEREGISTRATION_DELAY = 30
RULE_PRIORITY = 1
NO_VERSION = "No version of this service is serving yet."
_GONE = frozenset(
    {
        "LoadBalancerNotFound",
        "TargetGroupNotFound",
        "ListenerNotFound",
        "RuleNotFound",
        "InvalidGroup.NotFound",
        "InvalidPermission.NotFound",
        "InvalidTarget",
        "ResourceNotFoundException",
    }
)
_LIMITS = frozenset(
    {"TooManyLoadBalancers", "TooManyTargetGroups", "TooManyRules", "TooManyTargets"}
)


def lb_name(service_id: uuid.UUID) -> str:
    return f"rd-{service_id.hex[:20]}"


def target_group_name(service_id: uuid.UUID, backend: str, *, tls: bool = True) -> str:
    """A version's target group: "rdt" for HTTPS to the head, "rd" for plain HTTP (the
    name every group had before the hop to the head was encrypted)."""
    return f"{'rdt' if tls else 'rd'}-{service_id.hex[:16]}-{backend}"[:32]


def _group_prefixes(service_id: uuid.UUID) -> tuple[str, str]:
    """The names of the service's target groups start with one of these."""
    return target_group_name(service_id, ""), target_group_name(service_id, "", tls=False)


def group_name(service_id: uuid.UUID) -> str:
    return f"raydeck-router-{service_id}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _missing_ok() -> Iterator[None]:
    """Deleting what is already gone is done."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) not in _GONE:
            raise


class AwsRouter:
    """Implements clouds.providers.base.ServiceRouter with the provider's clients (its
    role's credentials, region and error translation)."""

    def __init__(self, provider: AwsProvider) -> None:
        self.provider = provider

    # -- ServiceRouter --------------------------------------------------------------

    def ensure_endpoint(
        self, *, service_id: uuid.UUID, ref: dict[str, Any], sign: EndpointSigner | None = None
    ) -> Endpoint:
        with self._errors("elasticloadbalancing"):
            ec2, elb = self.provider._client("ec2"), self.provider._client("elbv2")
            acm = self.provider._client("acm")
            vpc, subnets = self._network(ec2)
            group = self._ensure_group(ec2, service_id, vpc)
            lb = self._load_balancer(elb, service_id)
            if lb is None:
                lb = elb.create_load_balancer(
                    Name=lb_name(service_id),
                    Subnets=subnets,
                    SecurityGroups=[group],
                    Scheme="internet-facing",
                    Type="application",
                    IpAddressType="ipv4",
                    Tags=self._tags(service_id),
                )["LoadBalancers"][0]
            self._https_listener(elb, acm, service_id, lb, sign)
            self._redirect_listener(elb, service_id, lb["LoadBalancerArn"])
        return Endpoint(url=f"https://{lb['DNSName']}", ref={"service_id": str(service_id)})

    def set_backends(self, *, ref: dict[str, Any], backends: list[Backend]) -> None:
        service_id = router_service_id(ref)
        with self._errors("elasticloadbalancing"):
            ec2, elb = self.provider._client("ec2"), self.provider._client("elbv2")
            lb = self._load_balancer(elb, service_id)
            if lb is None:
                raise TransientCloudError("The service's load balancer is not there yet.")
            listener = self._listeners(elb, lb["LoadBalancerArn"]).get(LISTENER_PORT)
            if listener is None:
                raise TransientCloudError("The service's HTTPS listener is not there yet.")
            groups = self._target_groups(elb, service_id)
            arns: dict[str, str] = {}
            for backend in backends:
                name = target_group_name(service_id, backend.name, tls=backend.tls)
                group = groups.get(name) or self._create_target_group(
                    elb, service_id, backend, lb["VpcId"]
                )
                arns[backend.name] = group["TargetGroupArn"]
                self._set_target(elb, group["TargetGroupArn"], backend)
            self._open_ports(ec2, service_id, {b.port for b in backends})
            self._set_rule(elb, service_id, listener["ListenerArn"], backends, arns)
            # Only once no rule names them can the others go (stopped versions' groups,
            # and those of a version whose head now speaks the other protocol).
            for group in groups.values():
                if group["TargetGroupArn"] not in arns.values():
                    with _missing_ok():
                        elb.delete_target_group(TargetGroupArn=group["TargetGroupArn"])

    def set_token_hashes(self, *, ref: dict[str, Any], token_hashes: list[str]) -> None:
        """Nothing: an ALB cannot compare a token's SHA-256 (docs/architecture.md says
        where the token is checked on AWS)."""

    def in_flight(self, *, ref: dict[str, Any], backend: str) -> int:
        """1 while the backend's deregistered target is still draining, else 0."""
        service_id = router_service_id(ref)
        names = {target_group_name(service_id, backend, tls=tls) for tls in (True, False)}
        states = []
        with self._errors("elasticloadbalancing"):
            elb = self.provider._client("elbv2")
            for name, group in self._target_groups(elb, service_id).items():
                if name in names:
                    health = elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
                    states += [
                        t["TargetHealth"]["State"] for t in health["TargetHealthDescriptions"]
                    ]
        return 1 if "draining" in states else 0

    def remove(self, *, ref: dict[str, Any]) -> None:
        if not ref.get("service_id"):
            return
        service_id = router_service_id(ref)
        with self._errors("elasticloadbalancing"):
            ec2, elb = self.provider._client("ec2"), self.provider._client("elbv2")
            lb = self._load_balancer(elb, service_id)
            if lb is not None:  # its listeners and rules go with it
                with _missing_ok():
                    elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
            for group in self._target_groups(elb, service_id).values():
                with _missing_ok():
                    elb.delete_target_group(TargetGroupArn=group["TargetGroupArn"])
            self._open_ports(ec2, service_id, set())
            self._remove_certificates(self.provider._client("acm"), service_id)
            group_id = self._find_group(ec2, service_id)
            if group_id is not None:
                try:
                    ec2.delete_security_group(GroupId=group_id)
                except ClientError as exc:
                    if _code(exc) != "DependencyViolation":
                        raise
                    # The deleted ALB's network interfaces take a minute or two to go.
                    raise TransientCloudError(
                        "The service's load balancer is still being deleted; Raydeck will "
                        "remove its security group once it is gone.",
                        detail=f"ec2:DeleteSecurityGroup: {exc}",
                    ) from None

    # -- the load balancer ----------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, service: str) -> Iterator[None]:
        """The router's own limits in words, then the driver's translation."""
        with self.provider._errors(service):
            try:
                yield
            except ClientError as exc:
                if _code(exc) in _LIMITS:
                    raise PermanentCloudError(
                        f"Your AWS account has reached a load balancer limit ({_code(exc)}) "
                        f"in {self.provider.region}: delete unused load balancers or target "
                        "groups, or request a quota increase (Elastic Load Balancing).",
                        kind=PermanentErrorKind.QUOTA,
                        detail=str(exc),
                    ) from None
                raise

    def _tags(self, service_id: uuid.UUID) -> list[dict[str, str]]:
        return [
            {"Key": TAG_CLOUD, "Value": str(self.provider.cloud_id)},
            {"Key": TAG_SERVICE, "Value": str(service_id)},
        ]

    def _network(self, ec2: Any) -> tuple[str, list[str]]:
        """The default VPC (where the cloud's nodes are) and one default subnet per zone."""
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise PermanentCloudError(
                f"{self.provider.region} has no default VPC, where Raydeck puts a service's "
                "load balancer beside the cloud's nodes: create one (aws ec2 "
                "create-default-vpc) or use another region.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        vpc = vpcs[0]["VpcId"]
        subnets = ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "default-for-az", "Values": ["true"]},
            ]
        )["Subnets"]
        by_zone = {s["AvailabilityZone"]: s["SubnetId"] for s in subnets}
        if len(by_zone) < 2:
            raise PermanentCloudError(
                f"An Application Load Balancer needs subnets in two availability zones; the "
                f"default VPC of {self.provider.region} has {len(by_zone)}.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        return vpc, [by_zone[z] for z in sorted(by_zone)]

    def _find_group(self, ec2: Any, service_id: uuid.UUID) -> str | None:
        groups = ec2.describe_security_groups(
            Filters=[
                {"Name": f"tag:{TAG_SERVICE}", "Values": [str(service_id)]},
                {"Name": "group-name", "Values": [group_name(service_id)]},
            ]
        )["SecurityGroups"]
        return str(groups[0]["GroupId"]) if groups else None

    def _ensure_group(self, ec2: Any, service_id: uuid.UUID, vpc: str) -> str:
        group_id = self._find_group(ec2, service_id)
        if group_id is not None:
            self._open_listener_ports(ec2, group_id)
            return group_id
        group_id = ec2.create_security_group(
            GroupName=group_name(service_id),
            Description="Raydeck service endpoint: HTTPS from anywhere",
            VpcId=vpc,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": self._tags(service_id)}],
        )["GroupId"]
        self._open_listener_ports(ec2, str(group_id))
        return str(group_id)

    @staticmethod
    def _open_listener_ports(ec2: Any, group_id: str) -> None:
        """Anyone may reach the listeners (a service made before HTTPS had port 80 only)."""
        group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        have = {p.get("FromPort") for p in group.get("IpPermissions", [])}
        missing = [
            {
                "IpProtocol": "tcp",
                "FromPort": port,
                "ToPort": port,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
            }
            for port in (LISTENER_PORT, REDIRECT_PORT)
            if port not in have
        ]
        if missing:
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=missing)

    def _open_ports(self, ec2: Any, service_id: uuid.UUID, ports: set[int]) -> None:
        """The nodes' group lets this endpoint's group in on exactly `ports`."""
        if self.provider.firewall is None:
            return  # the customer's own network rules decide
        source = self._find_group(ec2, service_id)
        if source is None:
            return
        nodes = self.provider._ensure_security_group(ec2)
        have = aws_firewall.router_ports(ec2, nodes, source)
        for port, add in [(p, False) for p in have - ports] + [(p, True) for p in ports - have]:
            permission = {
                "IpProtocol": "tcp",
                "FromPort": port,
                "ToPort": port,
                "UserIdGroupPairs": [{"GroupId": source, "Description": aws_firewall.ROUTER_RULE}],
            }
            if add:
                ec2.authorize_security_group_ingress(GroupId=nodes, IpPermissions=[permission])
            else:
                with _missing_ok():
                    ec2.revoke_security_group_ingress(GroupId=nodes, IpPermissions=[permission])

    def _load_balancer(self, elb: Any, service_id: uuid.UUID) -> dict[str, Any] | None:
        try:
            found = elb.describe_load_balancers(Names=[lb_name(service_id)])["LoadBalancers"]
        except ClientError as exc:
            if _code(exc) != "LoadBalancerNotFound":
                raise
            return None
        return found[0] if found else None

    @staticmethod
    def _listeners(elb: Any, lb_arn: str) -> dict[int, dict[str, Any]]:
        listeners = elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
        return {int(listener["Port"]): listener for listener in listeners}

    def _https_listener(
        self,
        elb: Any,
        acm: Any,
        service_id: uuid.UUID,
        lb: dict[str, Any],
        sign: EndpointSigner | None,
    ) -> None:
        listener = self._listeners(elb, lb["LoadBalancerArn"]).get(LISTENER_PORT)
        if listener is not None:
            arn = listener["Certificates"][0]["CertificateArn"]
        else:  # one imported just before a crash is found by its tags
            arn = self._find_certificate(acm, service_id)
        arn = self._ensure_certificate(acm, service_id, arn, str(lb["DNSName"]), sign)
        if listener is not None:
            return
        elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTPS",
            Port=LISTENER_PORT,
            SslPolicy=SSL_POLICY,
            Certificates=[{"CertificateArn": arn}],
            DefaultActions=[
                {
                    "Type": "fixed-response",
                    "FixedResponseConfig": {
                        "StatusCode": "503",
                        "ContentType": "text/plain",
                        "MessageBody": NO_VERSION,
                    },
                }
            ],
            Tags=self._tags(service_id),
        )

    def _redirect_listener(self, elb: Any, service_id: uuid.UUID, lb_arn: str) -> None:
        """Port 80 answers every request with a redirect to HTTPS; a service made before
        HTTPS had its forward rule there: it goes."""
        redirect = [
            {
                "Type": "redirect",
                "RedirectConfig": {
                    "Protocol": "HTTPS",
                    "Port": str(LISTENER_PORT),
                    "StatusCode": "HTTP_301",
                },
            }
        ]
        listener = self._listeners(elb, lb_arn).get(REDIRECT_PORT)
        if listener is None:
            elb.create_listener(
                LoadBalancerArn=lb_arn,
                Protocol="HTTP",
                Port=REDIRECT_PORT,
                DefaultActions=redirect,
                Tags=self._tags(service_id),
            )
            return
        if [a["Type"] for a in listener["DefaultActions"]] == ["redirect"]:
            return
        for rule in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]:
            if not rule["IsDefault"]:
                with _missing_ok():
                    elb.delete_rule(RuleArn=rule["RuleArn"])
        elb.modify_listener(ListenerArn=listener["ListenerArn"], DefaultActions=redirect)

    # -- the endpoint's certificate ---------------------------------------------------

    def _find_certificate(self, acm: Any, service_id: uuid.UUID) -> str | None:
        found = self._certificates(acm, service_id)
        return found[0] if found else None

    def _certificates(self, acm: Any, service_id: uuid.UUID) -> list[str]:
        """ACM certificates tagged with this service (ACM has no names to look up)."""
        found = []
        for page in acm.get_paginator("list_certificates").paginate():
            for summary in page["CertificateSummaryList"]:
                arn = summary["CertificateArn"]
                with _missing_ok():
                    tags = acm.list_tags_for_certificate(CertificateArn=arn).get("Tags", [])
                    if {"Key": TAG_SERVICE, "Value": str(service_id)} in tags:
                        found.append(str(arn))
        return found

    def _ensure_certificate(
        self,
        acm: Any,
        service_id: uuid.UUID,
        arn: str | None,
        dns_name: str,
        sign: EndpointSigner | None,
    ) -> str:
        """The certificate's ARN; imported (again, in place) when missing or ending."""
        if arn is not None:
            ends = acm.describe_certificate(CertificateArn=arn)["Certificate"].get("NotAfter")
            if ends is not None and ends.timestamp() - time.time() > ENDPOINT_RENEW_BEFORE_SECONDS:
                return arn
        if sign is None:
            raise ValueError("The endpoint needs a certificate and no signer was given.")
        new = sign([dns_name])
        pem = {
            "Certificate": new.certificate_pem.encode(),
            "PrivateKey": new.private_key_pem.encode(),
            "CertificateChain": new.chain_pem.encode(),
        }
        if arn is not None:  # the listener keeps the ARN
            acm.import_certificate(CertificateArn=arn, **pem)
            # Re-imports take no tags; stating them again keeps the certificate findable
            # (and removable) whatever the import did to them.
            acm.add_tags_to_certificate(CertificateArn=arn, Tags=self._tags(service_id))
            return arn
        return str(acm.import_certificate(**pem, Tags=self._tags(service_id))["CertificateArn"])

    def _remove_certificates(self, acm: Any, service_id: uuid.UUID) -> None:
        for arn in self._certificates(acm, service_id):
            try:
                acm.delete_certificate(CertificateArn=arn)
            except ClientError as exc:
                if _code(exc) == "ResourceNotFoundException":
                    continue
                if _code(exc) != "ResourceInUseException":
                    raise
                # The deleted load balancer lets go of it within a minute or so.
                raise TransientCloudError(
                    "The service's load balancer is still being deleted; Raydeck will "
                    "remove its certificate once it is gone.",
                    detail=f"acm:DeleteCertificate: {exc}",
                ) from None

    # -- versions -------------------------------------------------------------------

    def _target_groups(self, elb: Any, service_id: uuid.UUID) -> dict[str, dict[str, Any]]:
        """The service's target groups by name, HTTPS and plain HTTP (a scan by name: one
        made just before a crash is in no rule yet, so the load balancer does not list
        it)."""
        prefixes = _group_prefixes(service_id)
        found = {}
        for page in elb.get_paginator("describe_target_groups").paginate():
            for group in page["TargetGroups"]:
                if group["TargetGroupName"].startswith(prefixes):
                    found[group["TargetGroupName"]] = group
        return found

    def _create_target_group(
        self, elb: Any, service_id: uuid.UUID, backend: Backend, vpc: str
    ) -> dict[str, Any]:
        protocol = "HTTPS" if backend.tls else "HTTP"
        group = elb.create_target_group(
            Name=target_group_name(service_id, backend.name, tls=backend.tls),
            Protocol=protocol,
            Port=backend.port,
            VpcId=vpc,
            TargetType="ip",
            HealthCheckProtocol=protocol,
            HealthCheckPath=HEALTH_PATH,
            HealthCheckIntervalSeconds=5,
            HealthCheckTimeoutSeconds=4,
            HealthyThresholdCount=2,
            UnhealthyThresholdCount=2,
            Tags=self._tags(service_id),
        )["TargetGroups"][0]
        elb.modify_target_group_attributes(
            TargetGroupArn=group["TargetGroupArn"],
            Attributes=[
                {"Key": "deregistration_delay.timeout_seconds", "Value": str(DEREGISTRATION_DELAY)}
            ],
        )
        return dict(group)

    @staticmethod
    def _set_target(elb: Any, group_arn: str, backend: Backend) -> None:
        """The group holds the version's head, or nothing once it drains."""
        health = elb.describe_target_health(TargetGroupArn=group_arn)["TargetHealthDescriptions"]
        have = {
            (t["Target"]["Id"], t["Target"]["Port"])
            for t in health
            if t["TargetHealth"]["State"] not in ("draining", "unused")
        }
        want = set() if backend.draining else {(backend.address, backend.port)}
        if stale := have - want:
            with _missing_ok():
                elb.deregister_targets(
                    TargetGroupArn=group_arn, Targets=[{"Id": i, "Port": p} for i, p in stale]
                )
        if missing := want - have:
            elb.register_targets(
                TargetGroupArn=group_arn, Targets=[{"Id": i, "Port": p} for i, p in missing]
            )

    def _set_rule(
        self,
        elb: Any,
        service_id: uuid.UUID,
        listener: str,
        backends: list[Backend],
        arns: dict[str, str],
    ) -> None:
        """One rule forwarding by weight; none (the listener's 503) when nothing takes
        new requests, since a forward needs a target group of weight above 0."""
        targets: list[dict[str, Any]] = [
            {"TargetGroupArn": arns[b.name], "Weight": 0 if b.draining else b.weight}
            for b in sorted(backends, key=lambda b: b.name)
        ]
        rules = [r for r in elb.describe_rules(ListenerArn=listener)["Rules"] if not r["IsDefault"]]
        if not any(t["Weight"] > 0 for t in targets):
            for rule in rules:
                with _missing_ok():
                    elb.delete_rule(RuleArn=rule["RuleArn"])
            return
        actions = [{"Type": "forward", "ForwardConfig": {"TargetGroups": targets}}]
        if rules:
            if _forwarded(rules[0]) != _forwarded({"Actions": actions}):
                elb.modify_rule(RuleArn=rules[0]["RuleArn"], Actions=actions)
            return
        elb.create_rule(
            ListenerArn=listener,
            Priority=RULE_PRIORITY,
            Conditions=[{"Field": "path-pattern", "Values": ["/*"]}],
            Actions=actions,
            Tags=self._tags(service_id),
        )


def _forwarded(rule: dict[str, Any]) -> set[tuple[str, int]]:
    """(target group, weight) of a rule's forward."""
    return {
        (t["TargetGroupArn"], int(t.get("Weight", 1)))
        for action in rule.get("Actions", [])
        for t in action.get("ForwardConfig", {}).get("TargetGroups", [])
    }
