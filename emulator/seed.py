#!/usr/bin/env python3
"""Seed the ECS emulator with a demo cluster; optionally serve every task's address.

usage: seed.py ENDPOINT [--fleet NAME=COUNT ...] [--backends] [--json]

Creates (boto3, credentials test/test, region us-east-1):
  * VPC 127.16.0.0/16 (DNS hostnames on), subnet 127.16.1.0/24 for awsvpc tasks, a
    security group; the VPC also gets 127.0.0.0/16 with a subnet 127.0.0.0/24 holding
    two EC2 instances, 127.0.0.21 and 127.0.0.22, registered as container instances
  * cluster `demo`; task definitions `web` (awsvpc, FARGATE, container `app` port 8080,
    with a container health check) and `api` (bridge, container `app` 8080 -> hostPort 0)
  * Cloud Map HTTP namespace `local` with service `web`
  * services `web` (FARGATE, 3 tasks, registered in Cloud Map local/web) and `api`
    (EC2, 2 tasks)
If cluster `demo` already exists, nothing is created.

--fleet NAME=COUNT (repeatable): also a service NAME of COUNT awsvpc/FARGATE tasks, for
tests of discovery at scale: its own task definition family NAME (container `app` port
8080, no health check: healthStatus UNKNOWN), no Cloud Map, its tasks in a subnet
127.16.16.0/20 (shared by every fleet: 4,091 addresses, 127.16.16.4 upward) created for
them. Fleet task definitions carry the tag `ecslb:fleet`: --backends serves none of
their tasks (it lists the other families' tasks only), and the summary shows one line
per fleet instead of one per task. moto starts 1,000 tasks in under a second.

--backends: then serve `hello from <task-id>` on every RUNNING task's address (awsvpc:
ENI IP:containerPort; bridge: instance IP:hostPort), following the cluster every 0.5 s
(new tasks get a server, STOPPED ones lose it) until SIGTERM/SIGINT. A line
`SERVING <n> backends` is printed once the first sync is done. Only the seeding calls
show in the emulator's /_ecslb/calls: the summary and the poller send
`X-Ecslb-Uncounted: 1`, so they are neither counted nor hit by injected failures.
--json: print the summary as one JSON object instead of a table.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from botocore.config import Config

CLUSTER = "demo"
REGION = "us-east-1"
FLEET_CIDR = "127.16.16.0/20"
FLEET_CAPACITY = 4096 - 5  # AWS keeps the first four and the last address of a subnet
FLEET_TAG = "ecslb:fleet"  # on fleet task definitions


def clients(endpoint: str, uncounted: bool = False) -> dict[str, Any]:
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    cfg = Config(retries={"max_attempts": 2, "mode": "standard"}, inject_host_prefix=False)
    out = {n: session.client(n, endpoint_url=endpoint, config=cfg) for n in ("ec2", "ecs", "servicediscovery")}
    if uncounted:
        # keep the emulator's request log (/_ecslb/calls) and fault injection for the code under test
        def mark(request: Any, **_kw: Any) -> None:
            request.headers["X-Ecslb-Uncounted"] = "1"

        for client in out.values():
            client.meta.events.register("before-sign.*.*", mark)
    return out


def register_awsvpc_family(
    ecs: Any, family: str, health_check: dict[str, Any] | None = None, tags: list[dict[str, str]] | None = None
) -> None:
    """A Fargate (awsvpc) task definition: container `app` of the demo web image on port 8080."""
    container: dict[str, Any] = {
        "name": "app",
        "image": "public.ecr.aws/ecslb/demo-web:latest",
        "memory": 128,
        "essential": True,
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
    }
    if health_check:
        container["healthCheck"] = health_check
    ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[container],
        **({"tags": tags} if tags else {}),
    )


def seed(c: dict[str, Any], fleets: dict[str, int] | None = None) -> dict[str, Any]:
    ec2, ecs, sd = c["ec2"], c["ecs"], c["servicediscovery"]
    existing = ecs.describe_clusters(clusters=[CLUSTER])["clusters"]
    if existing and existing[0]["status"] == "ACTIVE":
        print(f"cluster {CLUSTER} already exists: not seeding again", file=sys.stderr)
        return {}

    vpc = ec2.create_vpc(CidrBlock="127.16.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": "ecslb-demo"}])
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.16.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="ecslb-demo", Description="ecslb demo tasks", VpcId=vpc)["GroupId"]

    # The container instances live at 127.0.0.21/.22: a second CIDR block and subnet for them.
    host_subnet = None
    try:
        ec2.associate_vpc_cidr_block(VpcId=vpc, CidrBlock="127.0.0.0/16")
        host_subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    except Exception as e:  # noqa: BLE001 - fall back to the default VPC
        print(f"note: no 127.0.0.0/24 subnet ({e}); instances go to the default VPC", file=sys.stderr)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    ecs.create_cluster(clusterName=CLUSTER)
    instances = []
    for n, ip in enumerate(("127.0.0.21", "127.0.0.22"), start=1):
        kw: dict[str, Any] = {"SubnetId": host_subnet, "SecurityGroupIds": [sg]} if host_subnet else {}
        inst = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.medium", PrivateIpAddress=ip,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": f"ecs-demo-{n}"}]}],
            **kw,
        )["Instances"][0]
        doc = {
            "instanceId": inst["InstanceId"],
            "privateIp": ip,
            "availabilityZone": inst["Placement"]["AvailabilityZone"],
            "region": REGION,
            "instanceType": "t3.medium",
            "imageId": image,
            "accountId": "123456789012",
        }
        ci = ecs.register_container_instance(
            cluster=CLUSTER, instanceIdentityDocument=json.dumps(doc), instanceIdentityDocumentSignature=""
        )["containerInstance"]
        instances.append({"instanceId": inst["InstanceId"], "privateIp": ip, "containerInstanceArn": ci["containerInstanceArn"]})

    register_awsvpc_family(
        ecs,
        "web",
        health_check={
            "command": ["CMD-SHELL", "curl -fs http://localhost:8080/ || exit 1"],
            "interval": 10, "timeout": 5, "retries": 3,
        },
    )
    ecs.register_task_definition(
        family="api",
        networkMode="bridge",
        requiresCompatibilities=["EC2"],
        containerDefinitions=[
            {
                "name": "app",
                "image": "public.ecr.aws/ecslb/demo-api:latest",
                "memory": 128,
                "essential": True,
                "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
            }
        ],
    )

    op = sd.create_http_namespace(Name="local", Description="ecslb demo")["OperationId"]
    ns = sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
    sd_web = sd.create_service(
        Name="web", NamespaceId=ns, Description="web tasks", HealthCheckCustomConfig={"FailureThreshold": 1}
    )["Service"]

    ecs.create_service(
        cluster=CLUSTER,
        serviceName="web",
        taskDefinition="web",
        desiredCount=3,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg], "assignPublicIp": "DISABLED"}
        },
        serviceRegistries=[{"registryArn": sd_web["Arn"], "containerName": "app", "containerPort": 8080}],
    )
    ecs.create_service(cluster=CLUSTER, serviceName="api", taskDefinition="api", desiredCount=2, launchType="EC2")
    out = {
        "vpc": vpc, "subnet": subnet, "hostSubnet": host_subnet, "securityGroup": sg, "instances": instances,
        "cluster": CLUSTER, "namespace": ns, "cloudMapService": sd_web["Id"],
    }
    if fleets:
        out["fleetSubnet"] = seed_fleets(ec2, ecs, vpc, sg, fleets)
        out["fleets"] = dict(fleets)
    return out


def seed_fleets(ec2: Any, ecs: Any, vpc: str, sg: str, fleets: dict[str, int]) -> str:
    """The fleet subnet, and one awsvpc service (and task definition family) per fleet."""
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=FLEET_CIDR, AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    for name, count in fleets.items():
        register_awsvpc_family(ecs, name, tags=[{"key": FLEET_TAG, "value": name}])
        ecs.create_service(
            cluster=CLUSTER,
            serviceName=name,
            taskDefinition=name,
            desiredCount=count,
            launchType="FARGATE",
            networkConfiguration={
                "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg], "assignPublicIp": "DISABLED"}
            },
        )
    return subnet


def parse_fleets(specs: list[str]) -> dict[str, int]:
    fleets: dict[str, int] = {}
    for spec in specs:
        name, _, count = spec.partition("=")
        if not name or name in ("web", "api") or name in fleets or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"seed.py: --fleet {spec!r}: want NAME=COUNT, a new service name and COUNT >= 1")
        fleets[name] = int(count)
    if sum(fleets.values()) > FLEET_CAPACITY:
        raise SystemExit(f"seed.py: the fleets want {sum(fleets.values())} tasks; {FLEET_CIDR} holds {FLEET_CAPACITY}")
    return fleets


# --------------------------------------------------------------------------------------
# task addresses
# --------------------------------------------------------------------------------------


class Resolver:
    def __init__(self, c: dict[str, Any]) -> None:
        self.ecs, self.ec2 = c["ecs"], c["ec2"]
        self.ci_ip: dict[str, str] = {}
        self.task_defs: dict[str, Any] = {}
        self.is_fleet: dict[str, bool] = {}  # task definition family -> tagged `ecslb:fleet`

    def families(self) -> list[str]:
        """The task definition families; those not seen before are classified."""
        families = self.ecs.list_task_definition_families(status="ACTIVE")["families"]
        for family in families:
            if family not in self.is_fleet:
                out = self.ecs.describe_task_definition(taskDefinition=family, include=["TAGS"])
                self.is_fleet[family] = any(t.get("key") == FLEET_TAG for t in out.get("tags") or [])
        return families

    def list_arns(self, desired: str = "RUNNING") -> list[str]:
        """The tasks of the cluster that are not in a fleet."""
        families = self.families()
        if not any(self.is_fleet[f] for f in families):
            return self._list({"desiredStatus": desired})
        arns: list[str] = []
        for family in families:
            if not self.is_fleet[family]:
                arns += self._list({"desiredStatus": desired, "family": family})
        return arns

    def fleets(self) -> dict[str, int]:
        """Each fleet family's RUNNING tasks."""
        return {f: len(self._list({"desiredStatus": "RUNNING", "family": f})) for f in self.families() if self.is_fleet[f]}

    def _list(self, filters: dict[str, str]) -> list[str]:
        arns, token = [], None
        while True:
            kw = {"cluster": CLUSTER, **filters}
            if token:
                kw["nextToken"] = token
            page = self.ecs.list_tasks(**kw)
            arns += page["taskArns"]
            token = page.get("nextToken")
            if not token:
                return arns

    def describe(self, arns: list[str]) -> list[dict[str, Any]]:
        out = []
        for i in range(0, len(arns), 100):
            out += self.ecs.describe_tasks(cluster=CLUSTER, tasks=arns[i : i + 100], include=["TAGS"])["tasks"]
        return out

    def instance_ip(self, ci_arn: str) -> str | None:
        if ci_arn not in self.ci_ip:
            ci = self.ecs.describe_container_instances(cluster=CLUSTER, containerInstances=[ci_arn])["containerInstances"]
            if not ci:
                return None
            res = self.ec2.describe_instances(InstanceIds=[ci[0]["ec2InstanceId"]])["Reservations"]
            self.ci_ip[ci_arn] = res[0]["Instances"][0]["PrivateIpAddress"]
        return self.ci_ip[ci_arn]

    def task_def(self, arn: str) -> Any:
        if arn not in self.task_defs:
            self.task_defs[arn] = self.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        return self.task_defs[arn]

    def addresses(self, task: dict[str, Any]) -> list[tuple[str, int]]:
        """Every (ip, port) the task listens on."""
        td = self.task_def(task["taskDefinitionArn"])
        out: list[tuple[str, int]] = []
        if td.get("networkMode") == "awsvpc":
            ip = None
            for att in task.get("attachments", []):
                for d in att.get("details", []):
                    if d["name"] == "privateIPv4Address":
                        ip = d["value"]
            if ip:
                for cd in td["containerDefinitions"]:
                    out += [(ip, pm["containerPort"]) for pm in cd.get("portMappings", [])]
        elif task.get("containerInstanceArn"):
            ip = self.instance_ip(task["containerInstanceArn"])
            if ip:
                for c in task.get("containers", []):
                    out += [(ip, b["hostPort"]) for b in c.get("networkBindings", [])]
        return out


def service_of(task: dict[str, Any]) -> str:
    g = task.get("group", "")
    return g.split(":", 1)[1] if g.startswith("service:") else g


def summary(tasks: list[dict[str, Any]], r: Resolver) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(tasks, key=lambda t: (service_of(t), [tuple(int(x) for x in ip.split(".")) + (p,) for ip, p in r.addresses(t)])):
        rows.append({
            "service": service_of(t),
            "taskId": t["taskArn"].split("/")[-1],
            "taskArn": t["taskArn"],
            "lastStatus": t.get("lastStatus"),
            "healthStatus": t.get("healthStatus"),
            "addresses": [f"{ip}:{port}" for ip, port in r.addresses(t)],
        })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'SERVICE':8} {'TASK':36} {'STATUS':8} {'HEALTH':9} ADDRESS")
    for row in rows:
        print(f"{row['service']:8} {row['taskId']:36} {row['lastStatus']:8} {row['healthStatus'] or '-':9} {' '.join(row['addresses'])}")


# --------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------


def make_handler(task_id: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            body = f"hello from {task_id}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Task-Id", task_id)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class Backends:
    def __init__(self, r: Resolver) -> None:
        self.r = r
        self.servers: dict[tuple[str, int], tuple[str, ThreadingHTTPServer]] = {}  # addr -> (task arn, server)
        self.known: set[str] = set()

    def start(self, arn: str, addr: tuple[str, int]) -> None:
        task_id = arn.split("/")[-1]
        try:
            srv = ThreadingHTTPServer(addr, make_handler(task_id))
        except OSError as e:
            print(f"! cannot serve {task_id} on {addr[0]}:{addr[1]}: {e}", file=sys.stderr, flush=True)
            return
        srv.daemon_threads = True
        # a short poll interval: stop() (shutdown) waits for it, and the sync waits for stop()
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.servers[addr] = (arn, srv)
        print(f"+ {task_id} on http://{addr[0]}:{addr[1]}", flush=True)

    def stop(self, addr: tuple[str, int]) -> None:
        arn, srv = self.servers.pop(addr)
        srv.shutdown()
        srv.server_close()
        print(f"- {arn.split('/')[-1]} on http://{addr[0]}:{addr[1]}", flush=True)

    def sync(self) -> None:
        arns = set(self.r.list_arns("RUNNING")) | self.known
        tasks = self.r.describe(sorted(arns)) if arns else []
        want: dict[tuple[str, int], str] = {}
        self.known = set()
        for t in tasks:
            if t.get("lastStatus") == "RUNNING":
                self.known.add(t["taskArn"])
                for addr in self.r.addresses(t):
                    want[addr] = t["taskArn"]
        for addr, (arn, _srv) in list(self.servers.items()):
            if want.get(addr) != arn:
                self.stop(addr)
        for addr, arn in want.items():
            if addr not in self.servers:
                self.start(arn, addr)

    def close(self) -> None:
        for addr in list(self.servers):
            arn, srv = self.servers.pop(addr)
            srv.shutdown()
            srv.server_close()


def main() -> int:
    ap = argparse.ArgumentParser(description="Seed the ECS emulator with the demo cluster.")
    ap.add_argument("endpoint", help="the emulator, e.g. http://127.0.0.1:5000")
    ap.add_argument("--backends", action="store_true", help="serve every RUNNING task's address until killed")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--fleet", action="append", default=[], metavar="NAME=COUNT",
                    help=f"also a service NAME of COUNT awsvpc tasks in {FLEET_CIDR}, without backends (repeatable)")
    args = ap.parse_args()
    fleets = parse_fleets(args.fleet)

    c = clients(args.endpoint)
    ids = seed(c, fleets)
    r = Resolver(clients(args.endpoint, uncounted=True))
    arns = r.list_arns()
    rows = summary(r.describe(arns) if arns else [], r)
    if args.json:
        print(json.dumps({"endpoint": args.endpoint, **ids, "tasks": rows}, indent=2))
    else:
        print_table(rows)
        for name, count in r.fleets().items():
            print(f"{name:8} {count} RUNNING awsvpc tasks in {FLEET_CIDR} (fleet: no backends)")
        print(f"export AWS_ENDPOINT_URL={args.endpoint} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION={REGION}")
    sys.stdout.flush()
    if not args.backends:
        return 0

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    b = Backends(r)
    first = True
    while not stop.is_set():
        try:
            b.sync()
            if first:
                print(f"SERVING {len(b.servers)} backends", flush=True)
                first = False
        except Exception as e:  # noqa: BLE001 - the emulator may be failing on purpose
            print(f"! sync failed: {e}", file=sys.stderr, flush=True)
        stop.wait(0.5)
    b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
