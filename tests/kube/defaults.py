"""What the real API server fills in on create (pod and container defaults, QoS class), and
the pod-template hash and controller references the controllers use."""

from __future__ import annotations

import hashlib
import json

from . import admission
from .base import _SAFE_ALPHABET, Obj


def _default_container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    # Quantities come back in canonical form ("1", "500m", "2Gi"), numbers too; a resource
    # with a limit and no request is requested at its limit.
    resources = c.get("resources") or {}
    for kind in ("limits", "requests"):
        values = resources.get(kind)
        if isinstance(values, dict):
            for name, value in values.items():
                if isinstance(value, str) and value[-1:] in ("k", "M", "G", "T"):
                    continue  # decimal units keep their spelling
                try:
                    values[name] = admission.spell(name, admission.quantity(value))
                except ValueError:
                    pass  # left for validation to refuse
    for name, limit in (resources.get("limits") or {}).items():
        resources.setdefault("requests", {}).setdefault(name, limit)
    c.setdefault("terminationMessagePolicy", "File")
    image = c.get("image") or ""
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        p.setdefault("protocol", "TCP")


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    if "serviceAccountName" not in spec and "serviceAccount" not in spec:
        spec["serviceAccountName"] = "default"
    spec.setdefault("serviceAccount", spec.get("serviceAccountName"))
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            _default_container(c)


def _qos_class(spec: Obj) -> str:
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    limits_all, any_set = True, False
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim[r]) != lim[r]:
                limits_all = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if limits_all else "Burstable"


def template_hash(template: Obj) -> str:
    """A stable hash of a pod template, spelled like the pod-template-hash label."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in digest[:10])


def controller_ref(obj: Obj) -> Obj | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def _strip_type(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
