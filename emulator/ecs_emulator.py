#!/usr/bin/env python3
"""An emulated ECS cluster for ecslb's tests: moto 5.2.5 in server mode, patched.

usage: ecs_emulator.py [--host 127.0.0.1] [--port 0] [--stop-delay SECONDS] [-v]

Prints exactly one line, ``READY http://HOST:PORT``, on stdout once it serves, then
runs until SIGTERM/SIGINT and exits 0.

What the patches add to stock moto (see /work/shared/EMULATOR.md for why):

* awsvpc tasks get their ENI address from the task's subnet: lowest free host from
  network+4 (127.16.1.0/24 -> 127.16.1.4, .5, ...), released when the task stops and
  handed out again only once no never-used address is left.
  A missing ``securityGroups`` falls back to the VPC's default group.
* bridge/host tasks get ``containers[].networkBindings``; ``hostPort: 0`` (or absent,
  in bridge mode) picks a free port by binding port 0 on the container instance's EC2
  private IP; several dynamic-port tasks fit on one container instance.
* one ``containers[]`` entry per container definition (moto only reports the first),
  with lastStatus, the task's ARN, networkInterfaces (awsvpc) and healthStatus.
* task ``healthStatus`` (and each container's) comes from the task tag ``ecslb:health``
  (HEALTHY / UNHEALTHY / UNKNOWN; ``ecslb:health:CONTAINER`` sets one container);
  without a tag: HEALTHY for containers whose definition has a healthCheck, else
  UNKNOWN.
* tasks never drift toward STOPPED on DescribeTasks (state manager set to manual).
* a minimal service scheduler: CreateService / UpdateService / DeleteService start and
  stop tasks (``group = "service:NAME"``, ``startedBy`` = deployment id) to match
  desiredCount; a new task definition, a new networkConfiguration or
  ``forceNewDeployment`` replaces every task (new ones first); StopTask on a service
  task starts a replacement, as ECS does; tasks are registered in / deregistered from
  Cloud Map when the service has ``serviceRegistries``.
* ListTasks honours ``serviceName``, defaults to ``desiredStatus=RUNNING`` and
  paginates (``maxResults`` <= 100, default 100); DescribeTasks is scoped to its
  cluster, reports unknown tasks as ``failures`` (reason MISSING) and rejects more
  than 100 tasks.
* Cloud Map RegisterInstance with an existing instance id replaces it (moto adds a
  duplicate).
* with ``--stop-delay S`` (or POST /_ecslb/config), a stopping task keeps
  ``lastStatus=RUNNING`` with ``desiredStatus=STOPPED`` for S seconds (draining), then
  becomes STOPPED.

Control endpoints (JSON, on the same port; not counted as AWS calls). AWS calls that
carry the header ``X-Ecslb-Uncounted: 1`` (seed.py's backend poller sends it) are
neither counted nor failed on purpose.

  GET  /_ecslb/calls          {"ECS.ListTasks": 3, "EC2.DescribeInstances": 1, ...}
  GET  /_ecslb/calls/log      {"calls": [{"t": 12.345678, "action": "ECS.ListTasks", "status": 200,
                              "took": 0.0071}, ...], "dropped": 0}: every counted call in
                              arrival order; t = seconds since the emulator started (monotonic
                              clock, taken when the request reaches the emulator, before the model
                              lock), status = the HTTP status answered (0 while in progress),
                              took = seconds until the answer was ready. Keeps the last 100,000
                              calls; "dropped" counts older ones.
  POST /_ecslb/calls/reset    resets the counters and the log, answers the counts before the reset
  POST /_ecslb/fail           {"status": 500|503|400, "actions": ["ECS.ListTasks"], "count": 2}
                              optional "code", "message", "delay" (seconds, before answering);
                              actions match "Service.Action" or a bare "Action"; empty or
                              ["*"] matches every AWS call; count -1 = until cleared.
                              Answers the rule (with "id" and "remaining").
  GET  /_ecslb/fail           {"rules": [...]}
  POST /_ecslb/fail/reset     (or DELETE /_ecslb/fail) drops every rule
  GET  /_ecslb/config         {"stop_delay": 0.0}
  POST /_ecslb/config         {"stop_delay": 2.5}
"""

from __future__ import annotations

import argparse
import base64
import inspect
import io
import ipaddress
import json
import logging
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2 import ec2_backends
from moto.ecs import models as ecs_models
from moto.ecs import responses as ecs_responses
from moto.ecs.exceptions import InvalidParameterException
from moto.moto_api import state_manager
from moto.moto_api._internal import mock_random
from moto.server import ThreadedMotoServer
from moto.servicediscovery import models as sd_models
from moto.servicediscovery.models import servicediscovery_backends

log = logging.getLogger("ecs_emulator")

# Every AWS request and every timer-driven state change runs under this lock: moto's
# models are not thread-safe, and the werkzeug server is threaded.
LOCK = threading.RLock()


class _State:
    def __init__(self) -> None:
        self.stop_delay = 0.0
        self.ports: dict[str, set[int]] = {}  # host IP -> dynamic host ports handed out
        self.timers: set[threading.Timer] = set()

    def reset(self) -> None:
        for t in list(self.timers):
            t.cancel()
        self.timers.clear()
        self.ports.clear()
        _EVER_ALLOCATED.clear()


STATE = _State()
_TLS = threading.local()

EcsTask = ecs_models.Task
EcsContainer = ecs_models.Container
EcsBackend = ecs_models.EC2ContainerServiceBackend

HEALTH_VALUES = ("HEALTHY", "UNHEALTHY", "UNKNOWN")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _ec2(account_id: str, region: str) -> Any:
    return ec2_backends[account_id][region]


def _tag(task: Any, key: str) -> str | None:
    for t in task.tags or []:
        if t.get("key") == key:
            return t.get("value")
    return None


def _norm_health(v: str) -> str:
    v = (v or "").strip().upper()
    return v if v in HEALTH_VALUES else "UNKNOWN"


def _network_mode(task_def: Any) -> str:
    return task_def.network_mode or "bridge"


def _container_instance(backend: Any, cluster_name: str, arn: str | None) -> Any:
    if not arn:
        return None
    return backend.container_instances.get(cluster_name, {}).get(arn.split("/")[-1])


def _instance_ip(backend: Any, cluster_name: str, arn: str | None) -> str | None:
    ci = _container_instance(backend, cluster_name, arn)
    if ci is None:
        return None
    try:
        return _ec2(backend.account_id, backend.region_name).get_instance(ci.ec2_instance_id).private_ip_address
    except Exception:  # noqa: BLE001 - instance gone
        return None


def _find_task_def(backend: Any, arn: str) -> Any:
    fam_rev = arn.split("/")[-1]
    fam, _, rev = fam_rev.rpartition(":")
    try:
        return backend.task_definitions[fam][int(rev)]
    except (KeyError, ValueError):
        return backend.describe_task_definition(fam_rev)


# --------------------------------------------------------------------------------------
# awsvpc addresses
# --------------------------------------------------------------------------------------


_EVER_ALLOCATED: dict[str, set[str]] = {}


def _alloc_subnet_ip(ec2: Any, subnet: Any) -> str:
    net = ipaddress.ip_network(str(subnet.cidr_block), strict=False)
    used = set(subnet._subnet_ips) | {str(ip) for ip in getattr(subnet, "aws_reserved_ips", ())}
    for eni in ec2.enis.values():
        sn = eni.subnet
        if sn is subnet or getattr(sn, "id", sn) == subnet.id:
            for a in eni.private_ip_addresses or []:
                if isinstance(a, dict) and a.get("PrivateIpAddress"):
                    used.add(a["PrivateIpAddress"])
            if eni.private_ip_address:
                used.add(eni.private_ip_address)
    first = int(net.network_address) + 4
    last = int(net.broadcast_address) - 1
    # An address freed by a stopped task is handed out again only once the subnet has no
    # never-used one left: a stopped task's server (and a proxy's pooled connections to
    # it) can outlive the task for a moment, and an instant reuse would let that old
    # server answer for the new task.
    ever = _EVER_ALLOCATED.setdefault(subnet.id, set())
    for reuse in (False, True):
        for n in range(first, last + 1):
            ip = str(ipaddress.ip_address(n))
            if ip not in used and (reuse or ip not in ever):
                ever.add(ip)
                return ip
    raise InvalidParameterException(f"No free IPv4 address left in subnet {subnet.id} ({net}).")


_orig_random_private_ip = ecs_models.random_private_ip


def _patched_random_private_ip(*args: Any, **kwargs: Any) -> str:
    ip = getattr(_TLS, "ip", None)
    return ip if ip else _orig_random_private_ip(*args, **kwargs)


# --------------------------------------------------------------------------------------
# dynamic host ports
# --------------------------------------------------------------------------------------


def _alloc_port(host_ip: str, protocol: str) -> int:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    taken = STATE.ports.setdefault(host_ip, set())
    for _ in range(100):
        s = socket.socket(socket.AF_INET, kind)
        try:
            try:
                s.bind((host_ip, 0))
            except OSError:
                s.bind(("127.0.0.1", 0))  # the instance IP is not local: any free port
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError(f"no free port on {host_ip}")


def _release_port(host_ip: str, port: int) -> None:
    STATE.ports.get(host_ip, set()).discard(port)


# --------------------------------------------------------------------------------------
# Task / Container patches
# --------------------------------------------------------------------------------------

_orig_task_init = EcsTask.__init__
_task_sig = inspect.signature(_orig_task_init)


def _task_init(self: Any, *args: Any, **kwargs: Any) -> None:
    ba = _task_sig.bind(self, *args, **kwargs)
    ba.apply_defaults()
    a = ba.arguments
    cluster, task_def, backend = a["cluster"], a["task_definition"], a["backend"]
    netconf = a["networking_configuration"]
    mode = _network_mode(task_def)
    ec2 = _ec2(backend.account_id, cluster.region_name)

    ip = None
    subnet = None
    if mode == "awsvpc" and netconf:
        netconf = json.loads(json.dumps(netconf))  # own copy
        vpc_conf = netconf.setdefault("awsvpcConfiguration", {})
        subnets = vpc_conf.get("subnets") or []
        if not subnets:
            raise InvalidParameterException("subnets can not be empty.")
        subnet = ec2.get_subnet(subnets[0])
        if not vpc_conf.get("securityGroups"):
            sg = ec2.get_default_security_group(subnet.vpc_id)
            vpc_conf["securityGroups"] = [sg.id] if sg else []
        ba.arguments["networking_configuration"] = netconf
        ip = _alloc_subnet_ip(ec2, subnet)

    _TLS.ip = ip
    try:
        _orig_task_init(*ba.args, **ba.kwargs)
    finally:
        _TLS.ip = None

    now = utcnow()
    self.created_at = now
    self.started_at = now
    self.connectivity = "CONNECTED"
    self.connectivity_at = now
    self.version = 1
    self.stop_code = None
    self.stopping_at = None
    self.stopped_at = None
    self.cpu = str(task_def.cpu) if task_def.cpu else str(sum(int(d.get("cpu") or 0) for d in task_def.container_definitions))
    self.memory = (
        str(task_def.memory)
        if task_def.memory
        else str(sum(int(d.get("memory") or d.get("memoryReservation") or 0) for d in task_def.container_definitions))
    )
    self.platform_family = "Linux"
    self._ecslb_ip = ip
    self._ecslb_subnet = subnet
    self._ecslb_eni = None
    self._ecslb_ports: list[tuple[str, int]] = []
    self._ecslb_final = False
    self._ecslb_task_def = task_def
    self._ecslb_service = None

    if ip is not None and subnet is not None:
        eni_id = next((d["value"] for d in self.attachments[0]["details"] if d["name"] == "networkInterfaceId"), None)
        self._ecslb_eni = eni_id
        try:
            subnet.request_ip(ip, ec2.get_network_interface(eni_id) if eni_id else self)
        except Exception:  # noqa: BLE001 - already tracked
            pass
        self.availability_zone = subnet.availability_zone
    host_ip = _instance_ip(backend, cluster.name, self.container_instance_arn)
    if host_ip:
        ci = _container_instance(backend, cluster.name, self.container_instance_arn)
        self.availability_zone = ci.attributes.get("ecs.availability-zone")
    if not getattr(self, "availability_zone", None):
        self.availability_zone = f"{cluster.region_name}a"

    # One Container per container definition.
    containers = []
    for cdef in task_def.container_definitions:
        c = EcsContainer(task_def)
        c.name = cdef.get("name")
        c.image = cdef.get("image")
        c.cpu = str(cdef.get("cpu", 0))
        c.memory = str(cdef["memory"]) if cdef.get("memory") is not None else None
        c.memory_reservation = str(cdef["memoryReservation"]) if cdef.get("memoryReservation") is not None else None
        c.environment = cdef.get("environment")
        c.command = cdef.get("command")
        c.task_arn = self.task_arn
        c.container_arn = (
            f"arn:aws:ecs:{cluster.region_name}:{backend.account_id}:container/{cluster.name}/{self.id}/{mock_random.uuid4()}"
        )
        c.runtime_id = f"{self.id}-{mock_random.uuid4().hex[:10]}"
        c.last_status = "RUNNING"
        c.exitCode = None
        c._ecslb_task = self
        c._ecslb_def = cdef
        c.network_bindings = []
        c.network_interfaces = []
        if mode == "awsvpc" and ip:
            c.network_interfaces = [{"attachmentId": self.attachments[0]["id"], "privateIpv4Address": ip}]
        elif mode in ("bridge", "host") and self.container_instance_arn:
            for pm in cdef.get("portMappings") or []:
                cport = pm.get("containerPort")
                if cport is None:
                    continue
                proto = (pm.get("protocol") or "tcp").lower()
                hport = pm.get("hostPort")
                if mode == "host":
                    hport = hport or cport
                elif not hport:
                    hport = _alloc_port(host_ip or "127.0.0.1", proto)
                    self._ecslb_ports.append((host_ip or "127.0.0.1", hport))
                c.network_bindings.append(
                    {"bindIP": "0.0.0.0", "containerPort": cport, "hostPort": hport, "protocol": proto}
                )
        containers.append(c)
    self.containers = containers


def _task_health(self: Any) -> str:
    v = _tag(self, "ecslb:health")
    if v:
        return _norm_health(v)
    states = []
    for c in self.containers:
        cdef = getattr(c, "_ecslb_def", {})
        if cdef.get("essential", True) and (cdef.get("healthCheck") or _tag(self, f"ecslb:health:{c.name}")):
            states.append(c.health_status)
    if "UNHEALTHY" in states:
        return "UNHEALTHY"
    if states and all(s == "HEALTHY" for s in states):
        return "HEALTHY"
    return "UNKNOWN"


def _container_health_get(self: Any) -> str:
    task = getattr(self, "_ecslb_task", None)
    if task is None:
        return self.__dict__.get("_ecslb_health", "HEALTHY")
    v = _tag(task, f"ecslb:health:{self.name}") or _tag(task, "ecslb:health")
    if v:
        return _norm_health(v)
    return "HEALTHY" if getattr(self, "_ecslb_def", {}).get("healthCheck") else "UNKNOWN"


def _container_health_set(self: Any, value: str) -> None:
    self.__dict__["_ecslb_health"] = value


def _task_status_get(self: Any) -> str | None:
    return self._status


def _task_status_set(self: Any, value: str) -> None:
    self._status = value


# --------------------------------------------------------------------------------------
# stopping tasks
# --------------------------------------------------------------------------------------


def _begin_stop(backend: Any, task: Any, reason: str, code: str) -> None:
    """desiredStatus=STOPPED now; lastStatus=STOPPED now or after STATE.stop_delay."""
    if task.desired_status == "STOPPED":
        return
    task.desired_status = "STOPPED"
    task.stopped_reason = reason
    task.stop_code = code
    task.stopping_at = utcnow()
    task.version = getattr(task, "version", 1) + 1
    svc = getattr(task, "_ecslb_service", None)
    if svc is not None:
        _cloudmap_deregister(svc, task)
    if STATE.stop_delay > 0:
        timer = threading.Timer(STATE.stop_delay, _finish_stop_later, args=(backend, task))
        timer.daemon = True
        STATE.timers.add(timer)
        timer.start()
    else:
        _finish_stop(backend, task)


def _finish_stop_later(backend: Any, task: Any) -> None:
    with LOCK:
        STATE.timers = {t for t in STATE.timers if t.is_alive() and t is not threading.current_thread()}
        _finish_stop(backend, task)
        svc = getattr(task, "_ecslb_service", None)
        if svc is not None:
            _update_counts(backend, svc)


def _finish_stop(backend: Any, task: Any) -> None:
    if getattr(task, "_ecslb_final", True):
        if task.last_status != "STOPPED":
            task.last_status = "STOPPED"
        return
    task._ecslb_final = True
    cluster = backend.clusters.get(task.cluster_name)
    ci = _container_instance(backend, task.cluster_name, task.container_instance_arn)
    if ci is not None and task.resource_requirements:
        try:
            backend.update_container_instance_resources(ci, task.resource_requirements, removing=True)
        except Exception:  # noqa: BLE001
            log.exception("releasing container instance resources")
    task.last_status = "STOPPED"
    if task.desired_status != "STOPPED":
        task.desired_status = "STOPPED"
    now = utcnow()
    task.stopped_at = now
    task.execution_stopped_at = now
    task.version = getattr(task, "version", 1) + 1
    for c in task.containers:
        c.last_status = "STOPPED"
        c.exitCode = 0
    for host_ip, port in task._ecslb_ports:
        _release_port(host_ip, port)
    task._ecslb_ports = []
    ec2 = _ec2(backend.account_id, task.region_name)
    if task._ecslb_ip and task._ecslb_subnet is not None:
        task._ecslb_subnet.del_subnet_ip(task._ecslb_ip)
    if task._ecslb_eni:
        try:
            ec2.delete_network_interface(task._ecslb_eni)
        except Exception:  # noqa: BLE001
            pass
    for att in task.attachments:
        att["status"] = "DELETED"
    if cluster is not None:
        _recount_cluster(backend, cluster)


# --------------------------------------------------------------------------------------
# Cloud Map
# --------------------------------------------------------------------------------------


def _task_address(backend: Any, task: Any, reg: dict[str, Any]) -> tuple[str | None, int | None]:
    task_def = task._ecslb_task_def
    mode = _network_mode(task_def)
    if mode == "awsvpc":
        ip = task._ecslb_ip
    else:
        ip = _instance_ip(backend, task.cluster_name, task.container_instance_arn)
    if reg.get("port"):
        return ip, int(reg["port"])
    cname, cport = reg.get("containerName"), reg.get("containerPort")
    containers = [c for c in task.containers if cname is None or c.name == cname]
    for c in containers:
        mappings = c._ecslb_def.get("portMappings") or []
        for pm in mappings:
            if cport is not None and pm.get("containerPort") != int(cport):
                continue
            if mode == "awsvpc":
                return ip, pm.get("containerPort")
            for b in c.network_bindings:
                if b["containerPort"] == pm.get("containerPort"):
                    return ip, b["hostPort"]
    return ip, None


def _registry_ids(svc: Any) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for reg in svc.service_registries or []:
        arn = reg.get("registryArn") or ""
        if arn:
            out.append((arn.split("/")[-1], reg))
    return out


def _cloudmap_register(backend: Any, svc: Any, task: Any) -> None:
    for sd_id, reg in _registry_ids(svc):
        sd = servicediscovery_backends[backend.account_id][task.region_name]
        ip, port = _task_address(backend, task, reg)
        attrs = {
            "AWS_INSTANCE_IPV4": ip or "",
            "AVAILABILITY_ZONE": task.availability_zone,
            "AWS_INIT_HEALTH_STATUS": "HEALTHY",
            "ECS_CLUSTER_NAME": task.cluster_name,
            "ECS_SERVICE_NAME": svc.name,
            "ECS_TASK_DEFINITION_FAMILY": task._ecslb_task_def.family,
            "REGION": task.region_name,
        }
        if port is not None:
            attrs["AWS_INSTANCE_PORT"] = str(port)
        ci = _container_instance(backend, task.cluster_name, task.container_instance_arn)
        if ci is not None:
            attrs["EC2_INSTANCE_ID"] = ci.ec2_instance_id
        try:
            sd.register_instance(sd_id, task.id, str(uuid.uuid4()), attrs)
            health = _task_health(task)
            if health in ("HEALTHY", "UNHEALTHY"):
                sd.get_instance(sd_id, task.id).health_status = health
        except Exception as e:  # noqa: BLE001 - a bad registry ARN must not break the service
            log.warning("Cloud Map register %s in %s failed: %s", task.id, sd_id, e)


def _cloudmap_deregister(svc: Any, task: Any) -> None:
    for sd_id, _reg in _registry_ids(svc):
        sd = servicediscovery_backends[task._account_id][task.region_name]
        try:
            sd.deregister_instance(sd_id, task.id)
        except Exception:  # noqa: BLE001 - not registered
            pass


def _cloudmap_sync_health(task: Any) -> None:
    svc = getattr(task, "_ecslb_service", None)
    if svc is None or task.desired_status != "RUNNING":
        return
    health = _task_health(task)
    if health not in ("HEALTHY", "UNHEALTHY"):
        return
    for sd_id, _reg in _registry_ids(svc):
        sd = servicediscovery_backends[task._account_id][task.region_name]
        try:
            sd.get_instance(sd_id, task.id).health_status = health
        except Exception:  # noqa: BLE001
            pass


_orig_sd_register = sd_models.ServiceDiscoveryBackend.register_instance


def _sd_register_instance(self: Any, service_id: str, instance_id: str, *args: Any, **kwargs: Any) -> str:
    # AWS upserts: registering an existing instance id replaces its attributes.
    service = self.get_service(service_id)
    service.instances = [i for i in service.instances if i.instance_id != instance_id]
    return _orig_sd_register(self, service_id, instance_id, *args, **kwargs)


# --------------------------------------------------------------------------------------
# placement and the service scheduler
# --------------------------------------------------------------------------------------


def _resource_requirements(task_definition: Any) -> dict[str, Any]:
    """moto's, minus dynamic (0/absent) host ports and awsvpc ports (they are on the ENI)."""
    req: dict[str, Any] = {"CPU": 0, "MEMORY": 0, "PORTS": [], "PORTS_UDP": []}
    mode = _network_mode(task_definition)
    for cd in task_definition.container_definitions:
        req["CPU"] += int(cd.get("cpu", cd.get("Cpu", 0)) or 0)
        mem = cd.get("memory", cd.get("Memory")) or cd.get("memoryReservation", cd.get("MemoryReservation")) or 0
        req["MEMORY"] += int(mem)
        if mode == "awsvpc":
            continue
        for pm in cd.get("portMappings", cd.get("PortMappings", [])) or []:
            hp = pm.get("hostPort", pm.get("HostPort"))
            if mode == "host" and not hp:
                hp = pm.get("containerPort", pm.get("ContainerPort"))
            if hp:
                req["PORTS"].append(hp)
    return req


def _place(backend: Any, cluster: Any, req: dict[str, Any], group: str | None) -> Any:
    """Spread: the ACTIVE container instance with the fewest tasks of `group`, then fewest tasks."""
    cis = [ci for ci in backend.container_instances.get(cluster.name, {}).values() if ci.status == "ACTIVE"]
    order = {id(ci): i for i, ci in enumerate(cis)}
    tasks = [t for t in backend.tasks.get(cluster.name, {}).values() if t.desired_status == "RUNNING"]

    def key(ci: Any) -> tuple[int, int, int]:
        same = sum(1 for t in tasks if t.container_instance_arn == ci.container_instance_arn and t.group == group)
        return (same, ci.running_tasks_count, order[id(ci)])

    for ci in sorted(cis, key=key):
        if backend._can_be_placed(ci, req):
            return ci
    return None


def _launch(
    backend: Any,
    cluster: Any,
    task_def: Any,
    *,
    group: str,
    started_by: str,
    launch_type: str,
    netconf: dict[str, Any] | None,
    tags: list[dict[str, str]] | None,
    overrides: dict[str, Any] | None = None,
    platform_version: str | None = None,
    capacity_provider_name: str | None = None,
    fargate: bool = False,
) -> Any:
    req = backend._calculate_task_resource_requirements(task_def)
    ci = None
    if not fargate:
        ci = _place(backend, cluster, req, group)
        if ci is None:
            return None
    task = EcsTask(
        cluster,
        task_def,
        ci.container_instance_arn if ci is not None else None,
        req,
        backend=backend,
        group=group,
        overrides=overrides or {},
        started_by=started_by or "",
        tags=list(tags or []),
        launch_type=launch_type or "",
        networking_configuration=netconf or None,
        platform_version=platform_version,
        capacity_provider_name=capacity_provider_name,
    )
    if ci is not None:
        backend.update_container_instance_resources(ci, req)
    backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
    _recount_cluster(backend, cluster)
    return task


def _recount_cluster(backend: Any, cluster: Any) -> None:
    tasks = backend.tasks.get(cluster.name, {}).values()
    cluster.running_tasks_count = sum(1 for t in tasks if t.last_status == "RUNNING")
    cluster.pending_tasks_count = 0
    cluster.active_services_count = sum(
        1 for s in backend.services.values() if s.cluster_name == cluster.name and s.status == "ACTIVE"
    )


def _service_tasks(backend: Any, svc: Any) -> list[Any]:
    group = f"service:{svc.name}"
    return [
        t
        for t in backend.tasks.get(svc.cluster_name, {}).values()
        if t.group == group and t.desired_status == "RUNNING"
    ]


def _new_deployment(svc: Any) -> dict[str, Any]:
    dep_id = f"ecs-svc/{mock_random.randint(0, 10**19 - 1):019d}"
    now = utcnow()
    dep = {
        "id": dep_id,
        "status": "PRIMARY",
        "taskDefinition": svc.task_definition,
        "desiredCount": svc.desired_count,
        "pendingCount": 0,
        "runningCount": 0,
        "failedTasks": 0,
        "createdAt": now,
        "updatedAt": now,
        "launchType": svc.launch_type,
        "platformVersion": svc.platform_version,
        "platformFamily": "Linux" if svc.launch_type == "FARGATE" else None,
        "networkConfiguration": svc.network_configuration or None,
        "rolloutState": "IN_PROGRESS",
        "rolloutStateReason": f"ECS deployment {dep_id} in progress.",
    }
    svc.deployments = [dep]
    return dep


def _update_counts(backend: Any, svc: Any) -> None:
    tasks = [
        t
        for t in backend.tasks.get(svc.cluster_name, {}).values()
        if t.group == f"service:{svc.name}" and t.last_status == "RUNNING"
    ]
    svc.running_count = len(tasks)
    svc.pending_count = 0
    if svc.deployments:
        dep = svc.deployments[0]
        mine = [t for t in tasks if t.started_by == dep["id"] and t.desired_status == "RUNNING"]
        dep["desiredCount"] = svc.desired_count
        dep["runningCount"] = len(mine)
        dep["pendingCount"] = 0
        dep["updatedAt"] = utcnow()
        done = len(mine) >= svc.desired_count and len(tasks) == len(mine)
        dep["rolloutState"] = "COMPLETED" if done else "IN_PROGRESS"
        dep["rolloutStateReason"] = f"ECS deployment {dep['id']} {'completed' if done else 'in progress'}."
    cluster = backend.clusters.get(svc.cluster_name)
    if cluster is not None:
        _recount_cluster(backend, cluster)


def _propagated_tags(backend: Any, svc: Any, task_def: Any) -> list[dict[str, str]]:
    if svc.propagate_tags == "SERVICE":
        return [dict(t) for t in svc.tags or []]
    if svc.propagate_tags == "TASK_DEFINITION":
        return [dict(t) for t in task_def.tags or []]
    return []


def _reconcile(backend: Any, svc: Any) -> None:
    """Start/stop the service's tasks so that desiredCount tasks of the PRIMARY deployment run."""
    if svc.deployment_controller.get("type", "ECS") != "ECS" or not svc.task_definition:
        return
    cluster = backend.clusters.get(svc.cluster_name)
    if cluster is None:
        return
    want = svc.desired_count if svc.status == "ACTIVE" else 0
    if not svc.deployments:
        _new_deployment(svc)
    dep = svc.deployments[0]
    running = _service_tasks(backend, svc)
    current = [t for t in running if t.started_by == dep["id"]]
    old = [t for t in running if t.started_by != dep["id"]]
    if want > 0:
        task_def = _find_task_def(backend, svc.task_definition)
        fargate = svc.launch_type == "FARGATE"
        for _ in range(want - len(current)):
            task = _launch(
                backend,
                cluster,
                task_def,
                group=f"service:{svc.name}",
                started_by=dep["id"],
                launch_type=svc.launch_type or "EC2",
                netconf=svc.network_configuration or None,
                tags=_propagated_tags(backend, svc, task_def),
                platform_version=(svc.platform_version or "1.4.0") if fargate else None,
                fargate=fargate,
            )
            if task is None:
                svc.events.insert(
                    0,
                    {
                        "id": str(uuid.uuid4()),
                        "createdAt": utcnow(),
                        "message": f"(service {svc.name}) was unable to place a task because no container instance met all of its requirements.",
                    },
                )
                break
            task._ecslb_service = svc
            _cloudmap_register(backend, svc, task)
            current.append(task)
    # scale in: the newest tasks go first
    for t in current[max(want, 0):][::-1]:
        _begin_stop(backend, t, "Scaling activity initiated by (deployment %s)" % dep["id"], "ServiceSchedulerInitiated")
    for t in old:
        _begin_stop(backend, t, "Scaling activity initiated by (deployment %s)" % dep["id"], "ServiceSchedulerInitiated")
    _update_counts(backend, svc)


# --------------------------------------------------------------------------------------
# backend method patches
# --------------------------------------------------------------------------------------

_orig_create_service = EcsBackend.create_service
_orig_update_service = EcsBackend.update_service
_orig_delete_service = EcsBackend.delete_service
_orig_run_task = EcsBackend.run_task
_orig_tag_resource = EcsBackend.tag_resource
_orig_untag_resource = EcsBackend.untag_resource


def _create_service(self: Any, cluster_str: str, service_name: str, desired_count: int, task_definition_str: str | None = None, *args: Any, **kwargs: Any) -> Any:
    cluster = self._get_cluster(cluster_str)
    existing = self.services.get(f"{cluster.name}:{service_name}")
    if existing is not None and existing.status == "ACTIVE":
        raise InvalidParameterException("Creation of service was not idempotent.")
    netconf = kwargs.get("network_configuration")
    if task_definition_str:
        td = self.describe_task_definition(task_definition_str)
        if _network_mode(td) == "awsvpc" and not netconf:
            raise InvalidParameterException(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified."
            )
    if netconf and not netconf.get("awsvpcConfiguration", {}).get("securityGroups"):
        # moto would KeyError; AWS uses the VPC's default security group
        ec2 = _ec2(self.account_id, self.region_name)
        vpc_conf = netconf.setdefault("awsvpcConfiguration", {})
        try:
            sn = ec2.get_subnet(vpc_conf["subnets"][0])
            sg = ec2.get_default_security_group(sn.vpc_id)
            vpc_conf["securityGroups"] = [sg.id] if sg else []
        except Exception:  # noqa: BLE001 - let moto report the bad subnet
            vpc_conf["securityGroups"] = []
    svc = _orig_create_service(self, cluster_str, service_name, desired_count, task_definition_str, *args, **kwargs)
    svc.running_count = 0
    svc.pending_count = 0
    if svc.deployments:
        _new_deployment(svc)
    _reconcile(self, svc)
    return svc


def _update_service(self: Any, props: dict[str, Any]) -> Any:
    cluster_str = props.get("cluster", "default")
    name = (props.get("service") or "").split("/")[-1]
    svc = self._get_service(cluster_str, name)
    before = (svc.task_definition, json.dumps(svc.network_configuration, sort_keys=True, default=str))
    force = bool(props.get("force_new_deployment", False))
    td_str = props.get("task_definition")
    netconf = props.get("network_configuration")
    svc = _orig_update_service(self, props)
    if td_str:
        svc.task_definition = self.describe_task_definition(td_str).arn
    if netconf is not None:
        svc.network_configuration = svc._validate_network(netconf)
    after = (svc.task_definition, json.dumps(svc.network_configuration, sort_keys=True, default=str))
    if svc.deployment_controller.get("type", "ECS") == "ECS" and (force or before != after or not svc.deployments):
        _new_deployment(svc)
    _reconcile(self, svc)
    return svc


def _delete_service(self: Any, cluster_name: str, service_name: str, force: bool) -> Any:
    svc = _orig_delete_service(self, cluster_name, service_name, force)
    svc.desired_count = 0
    _reconcile(self, svc)
    svc.status = "INACTIVE"
    _update_counts(self, svc)
    return svc


def _stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
    cluster = self._get_cluster(cluster_str)
    task_id = task_str.split("/")[-1]
    for arn, task in self.tasks.get(cluster.name, {}).items():
        if arn.split("/")[-1] == task_id:
            if task.desired_status != "STOPPED":
                _begin_stop(self, task, reason or "Task stopped by user", "UserInitiated")
                svc = getattr(task, "_ecslb_service", None)
                if svc is not None and svc.status == "ACTIVE":
                    _reconcile(self, svc)  # the scheduler replaces it, as ECS does
            return task
    raise InvalidParameterException("The referenced task was not found.")


def _run_task(
    self: Any,
    cluster_str: str,
    task_definition_str: str,
    count: int,
    overrides: dict[str, Any] | None,
    started_by: str,
    tags: list[dict[str, str]] | None,
    launch_type: str | None,
    networking_configuration: dict[str, Any] | None = None,
    group: str | None = None,
    platform_version: str | None = None,
    capacity_provider_strategy: list[dict[str, Any]] | None = None,
) -> list[Any]:
    cluster = self._get_cluster(cluster_str)
    cps = capacity_provider_strategy
    if not launch_type and not cps:
        cps = cluster.default_capacity_provider_strategy
    cp_name = cps[0]["capacityProvider"] if cps else None
    fargate = launch_type == "FARGATE" or cp_name in ("FARGATE", "FARGATE_SPOT")
    if fargate or (launch_type and launch_type not in ("EC2", "FARGATE", "EXTERNAL")) or (launch_type and capacity_provider_strategy):
        return _orig_run_task(
            self, cluster_str, task_definition_str, count, overrides, started_by, tags, launch_type,
            networking_configuration, group, platform_version, capacity_provider_strategy,
        )
    task_def = self.describe_task_definition(task_definition_str)
    if not self.container_instances.get(cluster.name):
        raise Exception(f"No instances found in cluster {cluster.name}")
    group = group or f"family:{task_def.family}"
    out = []
    for _ in range(count or 1):
        task = _launch(
            self, cluster, task_def, group=group, started_by=started_by or "", launch_type=launch_type or "",
            netconf=networking_configuration, tags=tags, overrides=overrides,
            capacity_provider_name=cp_name,
        )
        if task is None:
            break
        out.append(task)
    return out


def _tag_resource(self: Any, arn: str, tags: dict[str, str]) -> None:
    _orig_tag_resource(self, arn, tags)
    _after_tag_change(self, arn)


def _untag_resource(self: Any, arn: str, keys: list[str]) -> None:
    _orig_untag_resource(self, arn, keys)
    _after_tag_change(self, arn)


def _after_tag_change(backend: Any, arn: str) -> None:
    if ":task/" not in arn:
        return
    for tasks in backend.tasks.values():
        t = tasks.get(arn)
        if t is not None:
            t.version = getattr(t, "version", 1) + 1
            _cloudmap_sync_health(t)


def _describe_tasks(self: Any, cluster_str: str, tasks: list[str]) -> list[Any]:
    found, _failures = _describe_tasks_with_failures(self, cluster_str, tasks)
    return found


def _describe_tasks_with_failures(backend: Any, cluster_str: str, ids: list[str]) -> tuple[list[Any], list[dict[str, str]]]:
    cluster = backend._get_cluster(cluster_str)
    if not ids:
        raise InvalidParameterException("Tasks cannot be empty.")
    if len(ids) > 100:
        raise InvalidParameterException("Tasks cannot be longer than 100.")
    by_id = {t.id: t for t in backend.tasks.get(cluster.name, {}).values()}
    found, failures, seen = [], [], set()
    for ref in ids:
        t = by_id.get(ref.split("/")[-1])
        if t is None:
            arn = ref if ref.startswith("arn:") else f"arn:aws:ecs:{backend.region_name}:{backend.account_id}:task/{cluster.name}/{ref}"
            failures.append({"arn": arn, "reason": "MISSING"})
        elif t.id not in seen:
            seen.add(t.id)
            found.append(t)
    return found, failures


# --------------------------------------------------------------------------------------
# response patches (ListTasks, DescribeTasks)
# --------------------------------------------------------------------------------------


def _resp_list_tasks(self: Any) -> ActionResult:
    backend = self.ecs_backend
    cluster_str = self._get_param("cluster", "default")
    service_name = self._get_param("serviceName")
    desired = self._get_param("desiredStatus") or "RUNNING"
    launch_type = self._get_param("launchType")
    max_results = self._get_param("maxResults")
    token = self._get_param("nextToken")
    if max_results is not None:
        max_results = int(max_results)
        if not 1 <= max_results <= 100:
            raise InvalidParameterException("maxResults must be between 1 and 100.")
    else:
        max_results = 100
    cluster = backend._get_cluster(cluster_str)
    ci_ref = self._get_param("containerInstance")
    tasks = backend.list_tasks(
        cluster.name,
        None,  # moto's containerInstance filter crashes on Fargate tasks
        self._get_param("family"),
        self._get_param("startedBy"),
        None,
        desired,
    )
    tasks = [t for t in tasks if t.cluster_name == cluster.name]
    if ci_ref:
        ci_id = ci_ref.split("/")[-1]
        tasks = [t for t in tasks if t.container_instance_arn and t.container_instance_arn.split("/")[-1] == ci_id]
    if service_name:
        name = service_name.split("/")[-1]
        backend._get_service(cluster.name, name)  # ServiceNotFoundException
        tasks = [t for t in tasks if t.group == f"service:{name}"]
    if launch_type:
        tasks = [t for t in tasks if t.launch_type == launch_type]
    arns = [t.task_arn for t in tasks]
    start = 0
    if token:
        try:
            start = arns.index(base64.urlsafe_b64decode(token.encode()).decode()) + 1
        except Exception:  # noqa: BLE001 - garbage, or a task that left the filter
            raise InvalidParameterException("Invalid nextToken.") from None
    page = arns[start : start + max_results]
    result: dict[str, Any] = {"taskArns": page}
    if start + max_results < len(arns):
        result["nextToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
    return ActionResult(result)


def _resp_describe_tasks(self: Any) -> ActionResult:
    cluster = self._get_param("cluster", "default")
    ids = self._get_param("tasks", [])
    tasks, failures = _describe_tasks_with_failures(self.ecs_backend, cluster, ids)
    if "TAGS" in (self._get_param("include", []) or []):
        self._include_in_response(ecs_responses.DESCRIBE_TASKS_TAGS)
    else:
        self._exclude_from_response(ecs_responses.DESCRIBE_TASKS_TAGS)
    return ActionResult({"tasks": tasks, "failures": failures})


_resource_requirements_static = staticmethod(_resource_requirements)

TRANSITION = {"progression": "manual", "times": 1_000_000_000}


def apply_patches() -> None:
    ecs_models.random_private_ip = _patched_random_private_ip
    EcsTask.__init__ = _task_init  # type: ignore[method-assign]
    EcsTask.health_status = property(_task_health)  # type: ignore[attr-defined]
    EcsTask.status = property(_task_status_get, _task_status_set)  # type: ignore[assignment]
    EcsTask.advance = lambda self: None  # type: ignore[method-assign]
    EcsContainer.health_status = property(_container_health_get, _container_health_set)  # type: ignore[attr-defined]
    EcsBackend._calculate_task_resource_requirements = _resource_requirements_static  # type: ignore[assignment]
    EcsBackend.create_service = _create_service  # type: ignore[method-assign]
    EcsBackend.update_service = _update_service  # type: ignore[method-assign]
    EcsBackend.delete_service = _delete_service  # type: ignore[method-assign]
    EcsBackend.stop_task = _stop_task  # type: ignore[method-assign]
    EcsBackend.run_task = _run_task  # type: ignore[method-assign]
    EcsBackend.describe_tasks = _describe_tasks  # type: ignore[method-assign]
    EcsBackend.tag_resource = _tag_resource  # type: ignore[method-assign]
    EcsBackend.untag_resource = _untag_resource  # type: ignore[method-assign]
    ecs_responses.EC2ContainerServiceResponse.list_tasks = _resp_list_tasks  # type: ignore[method-assign]
    ecs_responses.EC2ContainerServiceResponse.describe_tasks = _resp_describe_tasks  # type: ignore[method-assign]
    sd_models.ServiceDiscoveryBackend.register_instance = _sd_register_instance  # type: ignore[method-assign]
    state_manager.register_default_transition("ecs::task", TRANSITION)
    state_manager.set_transition("ecs::task", TRANSITION)


# --------------------------------------------------------------------------------------
# WSGI middleware: request log, fault injection, control endpoints, the global lock
# --------------------------------------------------------------------------------------

TARGET_PREFIXES = {
    "AmazonEC2ContainerServiceV20141113": "ECS",
    "Route53AutoNaming_v20170314": "ServiceDiscovery",
}
SIGNING_NAMES = {"ec2": "EC2", "ecs": "ECS", "servicediscovery": "ServiceDiscovery", "sts": "STS", "iam": "IAM"}


def _signing_service(environ: dict[str, Any]) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    i = auth.find("Credential=")
    if i < 0:
        return None
    parts = auth[i + len("Credential=") :].split(",")[0].split("/")
    return parts[3] if len(parts) >= 5 else None


CALL_LOG_SIZE = 100_000
STARTED = time.monotonic()


class Control:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        # Every counted call, in arrival order: {"t", "action", "status", "took"}.
        self.log: deque[dict[str, Any]] = deque(maxlen=CALL_LOG_SIZE)
        self.logged = 0  # calls ever appended since the last reset (the deque drops the oldest)
        self.rules: list[dict[str, Any]] = []
        self.next_id = 1


CONTROL = Control()


class Middleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    # -- helpers --
    @staticmethod
    def _json(start_response: Any, status: int, obj: Any) -> list[bytes]:
        body = json.dumps(obj, sort_keys=True).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "OK")
        start_response(f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _read_body(environ: dict[str, Any]) -> bytes:
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            n = 0
        body = environ["wsgi.input"].read(n) if n > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return body

    def _action(self, environ: dict[str, Any]) -> tuple[str | None, str]:
        """(key like 'ECS.ListTasks' or None, protocol 'json'|'query'|'rest')."""
        target = environ.get("HTTP_X_AMZ_TARGET")
        signing = _signing_service(environ)
        if target:
            prefix, _, op = target.rpartition(".")
            svc = TARGET_PREFIXES.get(prefix) or SIGNING_NAMES.get(signing or "", signing or prefix)
            return f"{svc}.{op}", "json"
        action = parse_qs(environ.get("QUERY_STRING", "")).get("Action", [None])[0]
        if action is None and environ.get("REQUEST_METHOD") == "POST" and "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            body = self._read_body(environ)
            action = parse_qs(body.decode("utf-8", "replace")).get("Action", [None])[0]
        if action:
            svc = SIGNING_NAMES.get(signing or "", (signing or "AWS").upper())
            return f"{svc}.{action}", "query"
        if signing:
            svc = SIGNING_NAMES.get(signing, signing.upper())
            return f"{svc}.{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}", "rest"
        return None, "rest"

    def _match_rule(self, key: str) -> dict[str, Any] | None:
        bare = key.split(".", 1)[-1]
        with CONTROL.lock:
            for rule in CONTROL.rules:
                acts = rule["actions"]
                if acts and "*" not in acts and key not in acts and bare not in acts:
                    continue
                if rule["remaining"] == 0:
                    continue
                if rule["remaining"] > 0:
                    rule["remaining"] -= 1
                rule["matched"] += 1
                hit = dict(rule)
                CONTROL.rules = [r for r in CONTROL.rules if r["remaining"] != 0]
                return hit
        return None

    @staticmethod
    def _fail(start_response: Any, rule: dict[str, Any], key: str, protocol: str) -> list[bytes]:
        status = int(rule["status"])
        svc = key.split(".", 1)[0]
        if protocol == "query" or svc == "EC2":
            default = {400: "RequestLimitExceeded", 503: "Unavailable"}.get(status, "InternalError")
        elif svc == "ECS":
            default = {400: "ThrottlingException", 503: "ServiceUnavailableException"}.get(status, "ServerException")
        else:
            default = {400: "ThrottlingException", 503: "ServiceUnavailable"}.get(status, "InternalFailure")
        code = rule.get("code") or default
        message = rule.get("message") or ("Rate exceeded" if status in (400, 429) else "injected failure (ecslb emulator)")
        rid = str(uuid.uuid4())
        reason = {400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
        if protocol == "query" or svc == "EC2":
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
                f"<RequestID>{rid}</RequestID></Response>"
            ).encode()
            headers = [("Content-Type", "text/xml;charset=UTF-8")]
        else:
            body = json.dumps({"__type": code, "message": message}).encode()
            headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)]
        headers += [("x-amzn-RequestId", rid), ("Content-Length", str(len(body)))]
        start_response(f"{status} {reason}", headers)
        return [body]

    def _control(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        body = self._read_body(environ) if method in ("POST", "PUT") else b""
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            return self._json(start_response, 400, {"error": "body is not JSON"})
        if path == "/_ecslb/calls" and method == "GET":
            with CONTROL.lock:
                return self._json(start_response, 200, dict(CONTROL.calls))
        if path == "/_ecslb/calls/log" and method == "GET":
            with CONTROL.lock:
                log = [dict(e) for e in CONTROL.log]
                dropped = CONTROL.logged - len(log)
            return self._json(start_response, 200, {"calls": log, "dropped": dropped})
        if path == "/_ecslb/calls/reset" and method == "POST":
            with CONTROL.lock:
                before = dict(CONTROL.calls)
                CONTROL.calls.clear()
                CONTROL.log.clear()
                CONTROL.logged = 0
            return self._json(start_response, 200, before)
        if path == "/_ecslb/fail" and method == "GET":
            with CONTROL.lock:
                return self._json(start_response, 200, {"rules": list(CONTROL.rules)})
        if (path == "/_ecslb/fail/reset" and method == "POST") or (path == "/_ecslb/fail" and method == "DELETE"):
            with CONTROL.lock:
                CONTROL.rules.clear()
            return self._json(start_response, 200, {"rules": []})
        if path == "/_ecslb/fail" and method == "POST":
            actions = data.get("actions") or []
            if isinstance(actions, str):
                actions = [actions]
            count = data.get("count", 1)
            try:
                status = int(data.get("status", 500))
                count = -1 if count is None else int(count)
                delay = float(data.get("delay", 0) or 0)
            except (TypeError, ValueError):
                return self._json(start_response, 400, {"error": "status, count and delay must be numbers"})
            rule = {
                "status": status,
                "actions": list(actions),
                "count": count,
                "remaining": count,
                "matched": 0,
                "code": data.get("code"),
                "message": data.get("message"),
                "delay": delay,
            }
            with CONTROL.lock:
                rule["id"] = CONTROL.next_id
                CONTROL.next_id += 1
                if count != 0:
                    CONTROL.rules.append(rule)
            return self._json(start_response, 200, rule)
        if path == "/_ecslb/config":
            if method == "POST":
                if "stop_delay" in data:
                    try:
                        STATE.stop_delay = max(0.0, float(data["stop_delay"]))
                    except (TypeError, ValueError):
                        return self._json(start_response, 400, {"error": "stop_delay must be a number"})
            return self._json(start_response, 200, {"stop_delay": STATE.stop_delay})
        return self._json(start_response, 404, {"error": f"no such control endpoint: {method} {path}"})

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        arrived = time.monotonic()
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_ecslb/"):
            return self._control(environ, start_response)
        key, protocol = (None, "rest")
        if not path.startswith("/moto-api") and not environ.get("HTTP_X_ECSLB_UNCOUNTED"):
            key, protocol = self._action(environ)
        entry: dict[str, Any] | None = None
        if key:
            entry = {"t": round(arrived - STARTED, 6), "action": key, "status": 0, "took": None}
            with CONTROL.lock:
                CONTROL.calls[key] = CONTROL.calls.get(key, 0) + 1
                CONTROL.log.append(entry)
                CONTROL.logged += 1
            rule = self._match_rule(key)
            if rule is not None:
                if rule.get("delay"):
                    time.sleep(rule["delay"])
                if rule["status"]:
                    out = self._fail(start_response, rule, key, protocol)
                    self._logged(entry, int(rule["status"]), arrived)
                    return out
        captured: dict[str, Any] = {}

        def sr(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        with LOCK:
            if path.startswith("/moto-api/reset"):
                STATE.reset()
            it = self.app(environ, sr)
            try:
                chunks = [c for c in it]
            finally:
                close = getattr(it, "close", None)
                if close:
                    close()
        if entry is not None:
            self._logged(entry, int(str(captured["status"]).split(" ", 1)[0]), arrived)
        start_response(captured["status"], captured["headers"])
        return chunks

    @staticmethod
    def _logged(entry: dict[str, Any], status: int, arrived: float) -> None:
        with CONTROL.lock:
            entry["status"] = status
            entry["took"] = round(time.monotonic() - arrived, 6)


class EmulatorServer(ThreadedMotoServer):
    """ThreadedMotoServer whose WSGI app is wrapped in the Middleware."""

    def _server_entry(self) -> None:
        from werkzeug.serving import make_server

        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        app = Middleware(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    ap.add_argument("--stop-delay", type=float, default=0.0, help="seconds a stopping task stays RUNNING (draining)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="ecs_emulator: %(levelname)s %(message)s")
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
    STATE.stop_delay = args.stop_delay
    apply_patches()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    server = EmulatorServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"READY http://{host}:{port}", flush=True)
    while not stop.wait(3600):
        pass
    STATE.reset()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
