#!/usr/bin/env python3
"""End-to-end check of the emulator: start it, seed it with --backends, poke everything.

usage: .venv/bin/python emulator/selftest.py     (after emulator/setup.sh)
Exits 0 when every check passes; prints one line per check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
FAILED: list[str] = []


def check(name: str, ok: bool, detail: Any = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else f': {detail}'}", flush=True)
    if not ok:
        FAILED.append(name)


def http(url: str, data: Any = None, method: str | None = None, timeout: float = 2) -> tuple[int, str]:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, method=method or ("POST" if body is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:  # refused, timeout
        return 0, str(e)


def wait_for(pred: Any, timeout: float = 5.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return bool(pred())


def main() -> int:
    emu = subprocess.Popen([PY, os.path.join(HERE, "ecs_emulator.py")], stdout=subprocess.PIPE, text=True)
    seed = None
    try:
        line = emu.stdout.readline().strip()  # type: ignore[union-attr]
        check("emulator prints READY", line.startswith("READY http://127.0.0.1:"), line)
        ep = line.split()[1]
        seed = subprocess.Popen([PY, os.path.join(HERE, "seed.py"), ep, "--backends"], stdout=subprocess.PIPE, text=True)
        out = []
        for ln in seed.stdout:  # type: ignore[union-attr]
            out.append(ln)
            if ln.startswith("SERVING"):
                break
        check("seed serves 5 backends", out[-1].strip() == "SERVING 5 backends", "".join(out))
        threading.Thread(target=lambda: [None for _ in seed.stdout], daemon=True).start()  # type: ignore[union-attr]

        s = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
        cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}, inject_host_prefix=False)
        ecs, ec2, sd = (s.client(n, endpoint_url=ep, config=cfg) for n in ("ecs", "ec2", "servicediscovery"))

        def tasks(service: str) -> list[dict[str, Any]]:
            arns = ecs.list_tasks(cluster="demo", serviceName=service)["taskArns"]
            return ecs.describe_tasks(cluster="demo", tasks=arns, include=["TAGS"])["tasks"] if arns else []

        def ip_of(t: dict[str, Any]) -> str:
            return next(d["value"] for d in t["attachments"][0]["details"] if d["name"] == "privateIPv4Address")

        web = tasks("web")
        check("web: 3 awsvpc tasks on 127.16.1.4-.6", sorted(ip_of(t) for t in web) == ["127.16.1.4", "127.16.1.5", "127.16.1.6"], [ip_of(t) for t in web])
        check("web: group/startedBy", all(t["group"] == "service:web" and t["startedBy"].startswith("ecs-svc/") for t in web))
        check("web: healthStatus HEALTHY (task def has a healthCheck)", all(t["healthStatus"] == "HEALTHY" for t in web))

        api = tasks("api")
        cis = {c["containerInstanceArn"]: c["ec2InstanceId"] for c in ecs.describe_container_instances(
            cluster="demo", containerInstances=ecs.list_container_instances(cluster="demo")["containerInstanceArns"])["containerInstances"]}
        ips = {i["InstanceId"]: i["PrivateIpAddress"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
        api_addrs = [(ips[cis[t["containerInstanceArn"]]], t["containers"][0]["networkBindings"][0]["hostPort"]) for t in api]
        check("api: 2 bridge tasks spread over 127.0.0.21/.22", sorted(a[0] for a in api_addrs) == ["127.0.0.21", "127.0.0.22"], api_addrs)
        check("api: dynamic host ports, distinct", len({a[1] for a in api_addrs}) == 2 and all(a[1] > 1024 for a in api_addrs), api_addrs)
        b = api[0]["containers"][0]["networkBindings"][0]
        check("api: binding shape", b["bindIP"] == "0.0.0.0" and b["containerPort"] == 8080 and b["protocol"] == "tcp", b)
        check("api: healthStatus UNKNOWN (no healthCheck)", all(t["healthStatus"] == "UNKNOWN" for t in api))

        for t in web:
            code, body = http(f"http://{ip_of(t)}:8080/")
            check(f"curl web {ip_of(t)}:8080", code == 200 and body.strip() == f"hello from {t['taskArn'].split('/')[-1]}", body)
        for (ip, port), t in zip(api_addrs, api):
            code, body = http(f"http://{ip}:{port}/x")
            check(f"curl api {ip}:{port}", code == 200 and t["taskArn"].split("/")[-1] in body, body)

        # scaling
        ecs.update_service(cluster="demo", service="web", desiredCount=5)
        web5 = tasks("web")
        check("scale web to 5", sorted(ip_of(t) for t in web5) == [f"127.16.1.{i}" for i in range(4, 9)], [ip_of(t) for t in web5])
        check("backends follow the scale-out", wait_for(lambda: http("http://127.16.1.8:8080/")[0] == 200))
        ecs.update_service(cluster="demo", service="web", desiredCount=2)
        web2 = tasks("web")
        check("scale web to 2", len(web2) == 2, len(web2))
        stopped = ecs.list_tasks(cluster="demo", serviceName="web", desiredStatus="STOPPED")["taskArns"]
        st = ecs.describe_tasks(cluster="demo", tasks=stopped)["tasks"]
        check("3 stopped tasks are STOPPED", len(st) == 3 and all(t["lastStatus"] == "STOPPED" and t["desiredStatus"] == "STOPPED" for t in st))

        check("backends follow the scale-in", wait_for(lambda: http("http://127.16.1.8:8080/")[0] == 0))
        ecs.update_service(cluster="demo", service="web", desiredCount=3)
        third = [ip_of(t) for t in tasks("web") if ip_of(t) not in {ip_of(t) for t in web2}]
        check("a freed IP is not handed out again while unused ones remain", third == ["127.16.1.9"], third)

        # redeploy: new task definition
        old = {t["taskArn"] for t in tasks("api")}
        td = ecs.describe_task_definition(taskDefinition="api")["taskDefinition"]
        ecs.register_task_definition(family="api", networkMode="bridge", containerDefinitions=td["containerDefinitions"])
        svc = ecs.update_service(cluster="demo", service="api", taskDefinition="api")["service"]
        new = tasks("api")
        check("new task definition replaces every task", len(new) == 2 and not (old & {t["taskArn"] for t in new}) and all(t["taskDefinitionArn"].endswith("api:2") for t in new))
        check("service taskDefinition is the new ARN", svc["taskDefinition"].endswith("task-definition/api:2"), svc["taskDefinition"])
        check("startedBy = the new deployment", all(t["startedBy"] == svc["deployments"][0]["id"] for t in new))
        olds = ecs.describe_tasks(cluster="demo", tasks=list(old))["tasks"]
        check("old tasks STOPPED", all(t["lastStatus"] == "STOPPED" and t["stopCode"] == "ServiceSchedulerInitiated" for t in olds))
        old = {t["taskArn"] for t in tasks("web")}
        ecs.update_service(cluster="demo", service="web", forceNewDeployment=True)
        check("forceNewDeployment replaces every task", len(tasks("web")) == 3 and not (old & {t["taskArn"] for t in tasks("web")}))

        # health via tags
        t0 = tasks("web")[0]
        ecs.tag_resource(resourceArn=t0["taskArn"], tags=[{"key": "ecslb:health", "value": "UNHEALTHY"}])
        d = ecs.describe_tasks(cluster="demo", tasks=[t0["taskArn"]])["tasks"][0]
        check("tag ecslb:health=UNHEALTHY shows", d["healthStatus"] == "UNHEALTHY" and d["containers"][0]["healthStatus"] == "UNHEALTHY", d["healthStatus"])
        ecs.untag_resource(resourceArn=t0["taskArn"], tagKeys=["ecslb:health"])
        d = ecs.describe_tasks(cluster="demo", tasks=[t0["taskArn"]])["tasks"][0]
        check("untag restores HEALTHY", d["healthStatus"] == "HEALTHY", d["healthStatus"])

        # Cloud Map
        inst = sd.discover_instances(NamespaceName="local", ServiceName="web")["Instances"]
        want = {(ip_of(t), "8080") for t in tasks("web")}
        got = {(i["Attributes"]["AWS_INSTANCE_IPV4"], i["Attributes"]["AWS_INSTANCE_PORT"]) for i in inst}
        check("Cloud Map lists exactly the web tasks", got == want, (got, want))
        check("Cloud Map instance id = task id", {i["InstanceId"] for i in inst} == {t["taskArn"].split("/")[-1] for t in tasks("web")})

        # StopTask: replaced by the scheduler
        victim = tasks("web")[0]["taskArn"]
        ecs.stop_task(cluster="demo", task=victim, reason="test")
        now = tasks("web")
        check("StopTask on a service task: replaced", len(now) == 3 and victim not in {t["taskArn"] for t in now})

        # ListTasks pagination and default desiredStatus
        p1 = ecs.list_tasks(cluster="demo", maxResults=2)
        p2 = ecs.list_tasks(cluster="demo", maxResults=2, nextToken=p1["nextToken"])
        p3 = ecs.list_tasks(cluster="demo", maxResults=2, nextToken=p2["nextToken"])
        allr = ecs.list_tasks(cluster="demo")["taskArns"]
        check("ListTasks paginates", p1["taskArns"] + p2["taskArns"] + p3["taskArns"] == allr and "nextToken" not in p3 and len(allr) == 5, len(allr))
        try:
            ecs.list_tasks(cluster="demo", serviceName="nope")
            check("ListTasks unknown service", False)
        except ClientError as e:
            check("ListTasks unknown service -> ServiceNotFoundException", e.response["Error"]["Code"] == "ServiceNotFoundException", e)

        # request log
        code, body = http(ep + "/_ecslb/calls")
        calls = json.loads(body)
        check("/_ecslb/calls counts", code == 200 and calls.get("ECS.ListTasks", 0) > 5 and calls.get("EC2.DescribeInstances", 0) >= 1
              and calls.get("ServiceDiscovery.DiscoverInstances") == 1, calls)
        code, body = http(ep + "/_ecslb/calls/reset", {})
        ecs.list_clusters()
        check("/_ecslb/calls/reset", json.loads(http(ep + "/_ecslb/calls")[1]) == {"ECS.ListClusters": 1})
        log = json.loads(http(ep + "/_ecslb/calls/log")[1])
        entry = log["calls"][0] if len(log["calls"]) == 1 else {}
        check("/_ecslb/calls/log: the call, its arrival time, status and duration",
              log["dropped"] == 0 and entry.get("action") == "ECS.ListClusters" and entry.get("status") == 200
              and isinstance(entry.get("t"), float) and entry["t"] > 0 and 0 <= entry.get("took", -1) < 5, log)

        # fault injection
        code, body = http(ep + "/_ecslb/fail", {"status": 503, "actions": ["ECS.DescribeServices"], "count": 1})
        check("/_ecslb/fail accepted", code == 200 and json.loads(body)["remaining"] == 1, body)
        try:
            ecs.describe_services(cluster="demo", services=["web"])
            check("injected 503", False)
        except ClientError as e:
            check("injected 503", e.response["ResponseMetadata"]["HTTPStatusCode"] == 503, e)
        check("next call succeeds", ecs.describe_services(cluster="demo", services=["web"])["services"][0]["serviceName"] == "web")
        logged = [(c["action"], c["status"]) for c in json.loads(http(ep + "/_ecslb/calls/log")[1])["calls"]]
        check("the log has the injected failure", logged[-2:] == [("ECS.DescribeServices", 503), ("ECS.DescribeServices", 200)], logged)
        http(ep + "/_ecslb/fail", {"status": 400, "actions": ["ListTasks", "EC2.DescribeInstances"], "count": 2})
        try:
            ecs.list_tasks(cluster="demo")
            check("injected throttling", False)
        except ClientError as e:
            check("injected throttling (ECS)", e.response["Error"]["Code"] == "ThrottlingException", e.response["Error"])
        try:
            ec2.describe_instances()
            check("injected throttling (EC2)", False)
        except ClientError as e:
            check("injected throttling (EC2)", e.response["Error"]["Code"] == "RequestLimitExceeded", e.response["Error"])
        check("rules used up", json.loads(http(ep + "/_ecslb/fail")[1]) == {"rules": []})

        # a fleet (seed.py --fleet): hundreds of awsvpc tasks in 127.16.16.0/20, no backends
        sys.path.insert(0, HERE)
        sys.dont_write_bytecode = True  # no __pycache__ in the repo
        import seed as seed_py  # noqa: PLC0415 - the seeder's own code

        vpc_conf = ecs.describe_services(cluster="demo", services=["web"])["services"][0]["networkConfiguration"]["awsvpcConfiguration"]
        vpc = ec2.describe_subnets(SubnetIds=vpc_conf["subnets"])["Subnets"][0]["VpcId"]
        started = time.monotonic()
        seed_py.seed_fleets(ec2, ecs, vpc, vpc_conf["securityGroups"][0], {"fleet": 250})
        took = time.monotonic() - started
        pages, token = [], None
        while True:
            page = ecs.list_tasks(cluster="demo", serviceName="fleet", **({"nextToken": token} if token else {}))
            pages.append(page["taskArns"])
            token = page.get("nextToken")
            if not token:
                break
        check(f"fleet of 250 started ({took:.2f} s), ListTasks pages of 100", [len(p) for p in pages] == [100, 100, 50], [len(p) for p in pages])
        fleet_ips = sorted(
            (ip_of(t) for i in range(0, 250, 100)
             for t in ecs.describe_tasks(cluster="demo", tasks=sum(pages, [])[i:i + 100])["tasks"]),
            key=lambda ip: tuple(int(x) for x in ip.split(".")),
        )
        check("fleet: addresses 127.16.16.4 upward, one each", fleet_ips[0] == "127.16.16.4" and fleet_ips[-1] == "127.16.16.253"
              and len(set(fleet_ips)) == 250, fleet_ips[:2] + fleet_ips[-2:])
        # a new web task, created after the fleet: once it is served, the poller has seen the fleet
        ecs.update_service(cluster="demo", service="web", desiredCount=4)
        web_ips = [ip_of(t) for t in tasks("web")]
        check("fleet: the other tasks keep their backends, new ones get one", wait_for(lambda: all(http(f"http://{ip}:8080/")[0] == 200 for ip in web_ips)),
              {ip: http(f"http://{ip}:8080/") for ip in web_ips})
        check("fleet: no backends", all(http(f"http://{ip}:8080/", timeout=0.5)[0] == 0 for ip in fleet_ips[:3] + fleet_ips[-3:]))

        # drain delay
        http(ep + "/_ecslb/config", {"stop_delay": 1.0})
        ecs.update_service(cluster="demo", service="api", desiredCount=1)
        arns = ecs.list_tasks(cluster="demo", serviceName="api", desiredStatus="STOPPED")["taskArns"]
        draining = [t for t in ecs.describe_tasks(cluster="demo", tasks=arns)["tasks"] if t["lastStatus"] == "RUNNING"]
        check("stop_delay: stopping task stays RUNNING, desiredStatus STOPPED", len(draining) == 1 and draining[0]["desiredStatus"] == "STOPPED")
        check("stop_delay: then STOPPED", wait_for(lambda: ecs.describe_tasks(cluster="demo", tasks=[draining[0]["taskArn"]])["tasks"][0]["lastStatus"] == "STOPPED", 3))
        http(ep + "/_ecslb/config", {"stop_delay": 0})

        ecs.delete_service(cluster="demo", service="web", force=True)
        check("delete_service stops its tasks", tasks("web") == [])
        check("delete_service empties Cloud Map", sd.discover_instances(NamespaceName="local", ServiceName="web")["Instances"] == [])
    finally:
        for p in (seed, emu):
            if p is not None and p.poll() is None:
                p.terminate()
        for p in (seed, emu):
            if p is not None:
                try:
                    rc = p.wait(5)
                    check(f"{'seed' if p is seed else 'emulator'} exits cleanly on SIGTERM", rc == 0, rc)
                except subprocess.TimeoutExpired:
                    p.kill()
                    check("clean exit", False, "timeout")
    print("ALL OK" if not FAILED else f"{len(FAILED)} FAILED: {', '.join(FAILED)}")
    return 0 if not FAILED else 1


if __name__ == "__main__":
    sys.exit(main())
