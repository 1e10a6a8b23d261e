"""The API server's admission of pods, services and claims against a namespace's LimitRanges
and ResourceQuotas, as kube-apiserver's LimitRanger and ResourceQuota plugins do it.

* LimitRanger (per container, ``type: Container``): fills in ``default`` limits and
  ``defaultRequest`` requests (the default limit when there is no defaultRequest) for what a
  container leaves out, then refuses a container above ``max`` or below ``min`` with the
  real message.
* ResourceQuota: a quota whose status the quota controller has not written yet refuses
  everything it covers ("status unknown for quota"); a pod must name a limit (or request)
  for every ``limits.*``/``requests.*`` resource a quota tracks; and what would push usage
  past ``hard`` is refused ("exceeded quota", with requested, used and limited). Usage is
  what the namespace holds: non-terminal pods' requests and limits, pod, service and claim
  counts, claimed storage.

Pure functions over plain dicts; the emulator turns a refusal into a 403 Forbidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

Obj = dict[str, Any]

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
COMPUTE = ("cpu", "memory")


class Refused(Exception):
    """Admission says no; the text is what follows ``<kind> "<name>" is forbidden:``."""


def quantity(text: Any) -> float:
    """A Kubernetes resource quantity ("500m", "1Gi", "2") as a number."""
    match = _QUANTITY.match(str(text).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"quantities must match the regular expression: {text!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def spell(resource: str, value: float) -> str:
    """A quantity as the API server prints it: cpu in cores or millicores, bytes in the
    largest binary unit that divides them."""
    if resource.endswith("cpu"):
        millis = round(value * 1000)
        return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    if resource.endswith(("memory", "storage")):
        number = round(value)
        for unit in ("Ti", "Gi", "Mi", "Ki"):
            if number and number % _SUFFIXES[unit] == 0:
                return f"{number // int(_SUFFIXES[unit])}{unit}"
        return str(number)
    return str(round(value))


# -- LimitRanger --------------------------------------------------------------------------


def _containers(spec: Obj) -> list[Obj]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def apply_limit_ranges(spec: Obj, limit_ranges: Iterable[Obj]) -> None:
    """Fill in each container's defaults from the LimitRanges, then check their bounds."""
    for limit_range in limit_ranges:
        for item in limit_range.get("spec", {}).get("limits") or []:
            if item.get("type") != "Container":
                continue
            for container in _containers(spec):
                resources = container.setdefault("resources", {})
                limits = resources.setdefault("limits", {})
                requests = resources.setdefault("requests", {})
                for name, value in (item.get("default") or {}).items():
                    limits.setdefault(name, value)
                wanted = item.get("defaultRequest") or item.get("default") or {}
                for name, value in wanted.items():
                    requests.setdefault(name, value)
                if not limits:
                    del resources["limits"]
                if not requests:
                    del resources["requests"]
            for container in _containers(spec):
                resources = container.get("resources") or {}
                for name, most in (item.get("max") or {}).items():
                    limit = (resources.get("limits") or {}).get(name)
                    if limit is None:
                        raise Refused(
                            f"maximum {name} usage per Container is {most}.  No limit is specified"
                        )
                    if quantity(limit) > quantity(most):
                        raise Refused(
                            f"maximum {name} usage per Container is {most}, but limit is {limit}"
                        )
                for name, least in (item.get("min") or {}).items():
                    request = (resources.get("requests") or {}).get(name)
                    if request is None:
                        raise Refused(
                            f"minimum {name} usage per Container is {least}.  No request is "
                            "specified"
                        )
                    if quantity(request) < quantity(least):
                        raise Refused(
                            f"minimum {name} usage per Container is {least}, but request is "
                            f"{request}"
                        )


# -- ResourceQuota ------------------------------------------------------------------------


def pod_usage(spec: Obj) -> dict[str, float]:
    """What one pod counts against a quota: itself, and its containers' requests and limits
    (an init container counts when it is larger, since it runs alone)."""
    usage: dict[str, float] = {"pods": 1, "count/pods": 1}
    for kind in ("requests", "limits"):
        for name in COMPUTE:
            total = sum(
                quantity(((c.get("resources") or {}).get(kind) or {}).get(name, 0))
                for c in spec.get("containers") or []
            )
            largest_init = max(
                (
                    quantity(((c.get("resources") or {}).get(kind) or {}).get(name, 0))
                    for c in spec.get("initContainers") or []
                ),
                default=0.0,
            )
            usage[f"{kind}.{name}"] = max(total, largest_init)
    usage["cpu"], usage["memory"] = usage["requests.cpu"], usage["requests.memory"]
    return usage


def service_usage(spec: Obj) -> dict[str, float]:
    kind = spec.get("type", "ClusterIP")
    return {
        "services": 1,
        "count/services": 1,
        "services.nodeports": float(kind in ("NodePort", "LoadBalancer")),
        "services.loadbalancers": float(kind == "LoadBalancer"),
    }


def claim_usage(spec: Obj) -> dict[str, float]:
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", 0)
    return {"persistentvolumeclaims": 1, "requests.storage": quantity(storage)}


def namespace_usage(
    pods: Iterable[Obj], services: Iterable[Obj], claims: Iterable[Obj]
) -> dict[str, float]:
    """Everything a namespace holds that a quota counts. Pods in a terminal phase do not."""
    total: dict[str, float] = {}
    parts = [
        pod_usage(p["spec"])
        for p in pods
        if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    parts += [service_usage(s.get("spec") or {}) for s in services]
    parts += [claim_usage(c.get("spec") or {}) for c in claims]
    for part in parts:
        for name, value in part.items():
            total[name] = total.get(name, 0.0) + value
    return total


def quota_status(quota: Obj, usage: Mapping[str, float]) -> Obj:
    """What the quota controller writes: hard as specified, used of each hard resource."""
    hard = dict((quota.get("spec") or {}).get("hard") or {})
    return {"hard": hard, "used": {name: spell(name, usage.get(name, 0.0)) for name in hard}}


def admit(quotas: Iterable[Obj], request: Mapping[str, float], spec: Obj | None = None) -> None:
    """Refuse ``request`` (a new object's usage) if a quota cannot take it. ``spec`` is the
    pod's, to name containers that leave out a tracked limit or request."""
    for quota in quotas:
        name = quota["metadata"]["name"]
        hard = (quota.get("spec") or {}).get("hard") or {}
        covered = sorted(r for r in hard if r in request)
        if not covered:
            continue
        status = quota.get("status") or {}
        if not status.get("hard") or set(hard) - set(status["hard"]):
            raise Refused(f"status unknown for quota: {name}, resources: {','.join(covered)}")
        if spec is not None:
            missing = []
            for resource in covered:
                kind, _, compute = resource.partition(".")
                if kind not in ("requests", "limits") or compute not in COMPUTE:
                    continue
                without = [
                    c["name"]
                    for c in spec.get("containers") or []
                    if compute not in ((c.get("resources") or {}).get(kind) or {})
                ]
                if without:
                    missing.append(f"{resource} for: {','.join(without)}")
            if missing:
                raise Refused(f"failed quota: {name}: must specify {'; '.join(missing)}")
        used = status.get("used") or {}
        over = [
            r for r in covered if quantity(used.get(r, 0)) + request[r] > quantity(hard[r]) + 1e-9
        ]
        if over:
            requested = ",".join(f"{r}={spell(r, request[r])}" for r in over)
            counted = ",".join(f"{r}={used.get(r, '0')}" for r in over)
            limited = ",".join(f"{r}={hard[r]}" for r in over)
            raise Refused(
                f"exceeded quota: {name}, requested: {requested}, used: {counted}, "
                f"limited: {limited}"
            )
