"""The emulator's built-in controllers, as kube-controller-manager runs them: namespace
lifecycle (the ``default`` ServiceAccount, deletion of everything in a terminating
namespace), the garbage collector (ownerReferences), Deployments and ReplicaSets, and the
quota controller. They react to stored changes soon after the request that made them, never
inside it, and act as the admin. A mixin of :class:`tests.kube.emulator.KubeEmulator`, whose
storage and operations they use.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import admission
from .base import Obj, now_iso
from .defaults import controller_ref, template_hash
from .errors import ApiError, forbidden, invalid
from .resources import (
    _BY_KEY,
    _KNOWN_KINDS,
    _UNDELETABLE_NAMESPACES,
    CLAIMS,
    DEPLOYMENTS,
    LIMIT_RANGES,
    NAMESPACES,
    PODS,
    QUOTAS,
    REPLICASETS,
    RESOURCES,
    SERVICE_ACCOUNTS,
    SERVICES,
    ResourceType,
)

if TYPE_CHECKING:
    from .emulator import _Event

log = logging.getLogger(__name__)


class Controllers:
    """Built-in controllers (mixed into the emulator)."""

    # ---------------------------------------------------------------- controllers plumbing

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule(self, key: tuple[str, ...]) -> None:
        # Controllers run soon after the change that triggered them, never inside the
        # request that made it, like real controllers reacting to watch events.
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._run_controllers)
        self._pending.add(key)

    def _run_controllers(self) -> None:
        rounds = 0
        while self._pending and rounds < 100:
            rounds += 1
            batch, self._pending = self._pending, set()
            for key in sorted(batch):
                try:
                    if key[0] == "deploy":
                        self._reconcile_deployment(key[1], key[2])
                    elif key[0] == "rs":
                        self._reconcile_replicaset(key[1], key[2])
                    elif key[0] == "gc":
                        self._collect_garbage()
                    elif key[0] == "nsinit":
                        self._init_namespace(key[1])
                    elif key[0] == "quota":
                        self._count_quota(key[1], key[2])
                except Exception:
                    log.exception("controller %s failed", key)
        if self._pending:
            asyncio.get_running_loop().call_soon(self._run_controllers)

    def _on_change(self, rt: ResourceType, ev: _Event) -> None:
        meta = ev.obj["metadata"]
        ns = meta.get("namespace", "")
        if rt is QUOTAS and ev.type != "DELETED":
            old_spec = (ev.old or {}).get("spec") if ev.old is not None else None
            if ev.type == "ADDED" or old_spec != ev.obj.get("spec"):
                # The quota controller counts a new or changed quota a moment later.
                asyncio.get_running_loop().call_later(
                    self.quota_sync_delay, self._schedule, ("quota", ns, meta["name"])
                )
        elif rt in (PODS, SERVICES, CLAIMS):
            self._count_quotas(ns)
        if rt is NAMESPACES and ev.type == "ADDED":
            self._schedule(("nsinit", meta["name"]))
        elif rt is DEPLOYMENTS:
            self._schedule(("deploy", ns, meta["name"]))
        elif rt is REPLICASETS:
            self._schedule(("rs", ns, meta["name"]))
            ref = controller_ref(ev.obj)
            if ref and ref.get("kind") == "Deployment":
                self._schedule(("deploy", ns, ref["name"]))
        elif rt is PODS:
            ref = controller_ref(ev.obj)
            if ref and ref.get("kind") == "ReplicaSet":
                self._schedule(("rs", ns, ref["name"]))

    # ---------------------------------------------------------------- namespaces

    def _delete_namespace(self, ns_obj: Obj) -> Obj:
        name = ns_obj["metadata"]["name"]
        if name in _UNDELETABLE_NAMESPACES:
            raise forbidden(NAMESPACES, name, "this namespace may not be deleted")
        if ns_obj.get("status", {}).get("phase") == "Terminating":
            return ns_obj
        new = copy.deepcopy(ns_obj)
        new["metadata"]["deletionTimestamp"] = now_iso()
        new["status"] = {"phase": "Terminating"}
        self._commit(NAMESPACES, new, "MODIFIED", ns_obj)
        if name not in self._terminating:
            self._terminating.add(name)
            self._spawn(self._finalize_namespace(name))
        return new

    async def _finalize_namespace(self, name: str) -> None:
        """The namespace controller: delete all content, then the namespace itself."""
        try:
            while True:
                remaining = 0
                for rt in RESOURCES:
                    if not rt.namespaced:
                        continue
                    for obj in self._objects_in(rt, name):
                        if obj["metadata"].get("deletionTimestamp") and rt is not PODS:
                            continue
                        try:
                            self._delete(rt, obj)
                        except ApiError:
                            log.exception("namespace %s: deleting %s failed", name, rt.plural)
                remaining = sum(
                    len(self._objects_in(rt, name)) for rt in RESOURCES if rt.namespaced
                )
                if remaining == 0:
                    break
                await asyncio.sleep(0.05)
            cur = self._get_obj(NAMESPACES, None, name)
            if cur is None:
                return
            new = copy.deepcopy(cur)
            new.setdefault("spec", {})["finalizers"] = []
            if new["metadata"].get("finalizers"):
                self._commit(NAMESPACES, new, "MODIFIED", cur)
            else:
                self._remove(NAMESPACES, new)
        finally:
            self._terminating.discard(name)

    def _init_namespace(self, name: str) -> None:
        # The serviceaccount controller gives every namespace a "default" ServiceAccount.
        ns = self._get_obj(NAMESPACES, None, name)
        if ns is None or ns.get("status", {}).get("phase") != "Active":
            return
        if self._get_obj(SERVICE_ACCOUNTS, name, "default") is None:
            try:
                self._create(SERVICE_ACCOUNTS, name, {"metadata": {"name": "default"}})
            except ApiError:
                pass

    # ---------------------------------------------------------------- garbage collector

    def _has_dependents(self, uid: str) -> bool:
        return any(
            any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
            for store in self._objects.values()
            for o in store.values()
        )

    def _orphan_dependents(self, uid: str) -> None:
        for rt in RESOURCES:
            for o in list(self._objects[rt.key].values()):
                refs = o["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    new = copy.deepcopy(o)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    if not new["metadata"]["ownerReferences"]:
                        del new["metadata"]["ownerReferences"]
                    self._commit(rt, new, "MODIFIED", o)

    def _owner(self, uid: str) -> Obj | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        return self._objects[where[0]].get(where[1])

    def _collect_garbage(self) -> None:
        for rt in RESOURCES:
            for o in list(self._objects[rt.key].values()):
                refs = o["metadata"].get("ownerReferences") or []
                if not refs or o["metadata"].get("deletionTimestamp"):
                    continue
                if any((r.get("apiVersion"), r.get("kind")) not in _KNOWN_KINDS for r in refs):
                    # The real GC cannot resolve an unknown owner kind and leaves it alone.
                    continue
                owners = [self._owner(r.get("uid", "")) for r in refs]
                alive = [
                    w
                    for w in owners
                    if w is not None
                    and not (
                        w["metadata"].get("deletionTimestamp")
                        and "foregroundDeletion" in (w["metadata"].get("finalizers") or [])
                    )
                ]
                if not alive:
                    cur = self._objects[rt.key].get(
                        (o["metadata"].get("namespace", ""), o["metadata"]["name"])
                    )
                    if cur is not None:
                        self._delete(rt, cur)
        # Release owners waiting for their dependents (foreground deletion).
        for rt in RESOURCES:
            for o in list(self._objects[rt.key].values()):
                fin = o["metadata"].get("finalizers") or []
                if "foregroundDeletion" in fin and not self._has_dependents(o["metadata"]["uid"]):
                    new = copy.deepcopy(o)
                    new["metadata"]["finalizers"] = [f for f in fin if f != "foregroundDeletion"]
                    if not new["metadata"]["finalizers"]:
                        del new["metadata"]["finalizers"]
                    self._commit(rt, new, "MODIFIED", o)
                    self._maybe_finish_deletion(rt, new)

    # ---------------------------------------------------------------- workload controllers

    def _namespace_active(self, ns: str) -> bool:
        obj = self._get_obj(NAMESPACES, None, ns)
        return obj is not None and obj.get("status", {}).get("phase") == "Active"

    def _owned(self, rt: ResourceType, ns: str, owner_uid: str) -> list[Obj]:
        return [
            o
            for o in self._objects_in(rt, ns)
            if (ref := controller_ref(o)) is not None and ref.get("uid") == owner_uid
        ]

    @staticmethod
    def _pod_ready(pod: Obj) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in pod.get("status", {}).get("conditions") or []
        )

    def _reconcile_deployment(self, ns: str, name: str) -> None:
        d = self._get_obj(DEPLOYMENTS, ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec, uid = d["spec"], d["metadata"]["uid"]
        desired = spec.get("replicas", 1)
        thash = template_hash(spec["template"])
        owned = self._owned(REPLICASETS, ns, uid)
        revisions = [
            int(rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", 0))
            for rs in owned
        ]
        new_rs = next(
            (
                rs
                for rs in owned
                if rs["metadata"].get("labels", {}).get("pod-template-hash") == thash
            ),
            None,
        )
        if new_rs is None and self._namespace_active(ns):
            template = copy.deepcopy(spec["template"])
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = (
                thash
            )
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = thash
            revision = max(revisions, default=0) + 1
            body = {
                "metadata": {
                    "name": f"{name}-{thash}",
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": {
                        "deployment.kubernetes.io/desired-replicas": str(desired),
                        "deployment.kubernetes.io/max-replicas": str(desired),
                        "deployment.kubernetes.io/revision": str(revision),
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": desired,
                    "minReadySeconds": spec.get("minReadySeconds", 0),
                    "selector": selector,
                    "template": template,
                },
            }
            try:
                new_rs = self._create(REPLICASETS, ns, body)
            except ApiError:
                log.exception("deployment %s/%s: creating replicaset failed", ns, name)
                return
            owned.append(new_rs)
        if (
            new_rs is not None
            and new_rs["spec"].get("replicas") != desired
            and not spec.get("paused")
        ):
            upd = copy.deepcopy(new_rs)
            upd["spec"]["replicas"] = desired
            upd["metadata"].setdefault("annotations", {})[
                "deployment.kubernetes.io/desired-replicas"
            ] = str(desired)
            upd["metadata"]["generation"] = upd["metadata"].get("generation", 1) + 1
            new_rs = self._commit(REPLICASETS, upd, "MODIFIED", new_rs)
        for rs in owned:
            if rs is not new_rs and rs["spec"].get("replicas", 0) != 0:
                upd = copy.deepcopy(rs)
                upd["spec"]["replicas"] = 0
                upd["metadata"]["generation"] = upd["metadata"].get("generation", 1) + 1
                self._commit(REPLICASETS, upd, "MODIFIED", rs)
        self._update_deployment_status(d, new_rs, self._owned(REPLICASETS, ns, uid))

    def _update_deployment_status(self, d: Obj, new_rs: Obj | None, owned: list[Obj]) -> None:
        spec = d["spec"]
        desired = spec.get("replicas", 1)
        replicas = sum(rs.get("status", {}).get("replicas", 0) for rs in owned)
        ready = sum(rs.get("status", {}).get("readyReplicas", 0) for rs in owned)
        available = sum(rs.get("status", {}).get("availableReplicas", 0) for rs in owned)
        updated = (new_rs or {}).get("status", {}).get("replicas", 0)
        max_unavailable = (
            (spec.get("strategy") or {}).get("rollingUpdate", {}).get("maxUnavailable", "25%")
        )
        if isinstance(max_unavailable, str) and max_unavailable.endswith("%"):
            max_unavailable = desired * int(max_unavailable[:-1]) // 100
        old_status = d.get("status", {})
        old_conditions = {c["type"]: c for c in old_status.get("conditions") or []}

        def condition(ctype: str, status: str, reason: str, message: str) -> Obj:
            old = old_conditions.get(ctype)
            if old and old.get("status") == status and old.get("reason") == reason:
                return old
            ts = now_iso()
            return {
                "type": ctype,
                "status": status,
                "lastUpdateTime": ts,
                "lastTransitionTime": ts,
                "reason": reason,
                "message": message,
            }

        name = d["metadata"]["name"]
        rs_name = (new_rs or {}).get("metadata", {}).get("name", "")
        conditions = [
            condition(
                "Available",
                "True" if available >= desired - int(max_unavailable) else "False",
                "MinimumReplicasAvailable"
                if available >= desired - int(max_unavailable)
                else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available >= desired - int(max_unavailable)
                else "Deployment does not have minimum availability.",
            ),
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable"
                if updated == desired and available >= desired
                else "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" has successfully progressed.'
                if updated == desired and available >= desired
                else f'ReplicaSet "{rs_name}" is progressing.',
            ),
        ]
        status: Obj = {"observedGeneration": d["metadata"].get("generation", 1)}
        for k, v in (
            ("replicas", replicas),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", max(desired - available, 0)),
        ):
            if v:  # omitempty, as the real serialisation
                status[k] = v
        status["conditions"] = conditions
        revision = (
            (new_rs or {})
            .get("metadata", {})
            .get("annotations", {})
            .get("deployment.kubernetes.io/revision")
        )
        annotations = d["metadata"].get("annotations") or {}
        if status == old_status and (
            revision is None or annotations.get("deployment.kubernetes.io/revision") == revision
        ):
            return
        upd = copy.deepcopy(d)
        upd["status"] = status
        if revision is not None:
            upd["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = (
                revision
            )
        self._commit(DEPLOYMENTS, upd, "MODIFIED", d)
        log.debug("deployment %s status %s", name, status)

    def _record_event(self, obj: Obj, etype: str, reason: str, message: str) -> None:
        """An Event about ``obj`` from a built-in controller."""
        meta = obj["metadata"]
        stamp = now_iso()
        try:
            self._create(
                _BY_KEY["/events"],
                meta["namespace"],
                {
                    "metadata": {"generateName": f"{meta['name']}."},
                    "involvedObject": {
                        "apiVersion": obj.get("apiVersion", ""),
                        "kind": obj.get("kind", ""),
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                    },
                    "type": etype,
                    "reason": reason,
                    "message": message,
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": "replicaset-controller"},
                },
            )
        except ApiError:
            pass  # a terminating namespace takes no events

    # ---------------------------------------------------------------- quotas

    def _usage(self, ns: str) -> dict[str, float]:
        return admission.namespace_usage(
            self._objects_in(PODS, ns), self._objects_in(SERVICES, ns), self._objects_in(CLAIMS, ns)
        )

    def _count_quota(self, ns: str, name: str) -> None:
        """The quota controller: ``status`` = hard as specified, and what the namespace uses."""
        quota = self._get_obj(QUOTAS, ns, name)
        if quota is None or quota["metadata"].get("deletionTimestamp"):
            return
        status = admission.quota_status(quota, self._usage(ns))
        if status != quota.get("status"):
            upd = copy.deepcopy(quota)
            upd["status"] = status
            self._commit(QUOTAS, upd, "MODIFIED", quota)

    def _count_quotas(self, ns: str) -> None:
        """Usage changed: recount every quota the controller has counted before (admission
        updates it with each object it lets in; deletions free it again)."""
        for quota in self._objects_in(QUOTAS, ns):
            if (quota.get("status") or {}).get("hard"):
                self._count_quota(ns, quota["metadata"]["name"])

    def _admit(self, rt: ResourceType, obj: Obj) -> None:
        """LimitRanger, then ResourceQuota, for a new pod, Service or claim."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        try:
            if rt is PODS:
                admission.apply_limit_ranges(spec, self._objects_in(LIMIT_RANGES, ns))
                request = admission.pod_usage(spec)
            elif rt is SERVICES:
                request = admission.service_usage(spec)
            else:
                request = admission.claim_usage(spec)
            admission.admit(self._objects_in(QUOTAS, ns), request, spec if rt is PODS else None)
        except admission.Refused as refused:
            raise forbidden(rt, name, str(refused)) from None
        except ValueError as exc:
            raise invalid(rt, name, [("spec", str(exc))]) from None

    def _reconcile_replicaset(self, ns: str, name: str) -> None:
        rs = self._get_obj(REPLICASETS, ns, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        uid = rs["metadata"]["uid"]
        desired = rs["spec"].get("replicas", 1)

        def active_pods() -> list[Obj]:
            return [
                p
                for p in self._owned(PODS, ns, uid)
                if not p["metadata"].get("deletionTimestamp")
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            ]

        active = active_pods()
        if len(active) < desired and self._namespace_active(ns):
            template = rs["spec"]["template"]
            for _ in range(desired - len(active)):
                tmeta = template.get("metadata") or {}
                body = {
                    "metadata": {
                        "generateName": f"{name}-",
                        "labels": dict(tmeta.get("labels") or {}),
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": name,
                                "uid": uid,
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": copy.deepcopy(template["spec"]),
                }
                if tmeta.get("annotations"):
                    body["metadata"]["annotations"] = dict(tmeta["annotations"])
                try:
                    self._create(PODS, ns, body)
                except ApiError as exc:
                    # As the real controller: an event, and another try after a back-off
                    # (a quota may be counted, or freed, meanwhile).
                    log.info("replicaset %s/%s: creating pod failed: %s", ns, name, exc)
                    self._record_event(rs, "Warning", "FailedCreate", f"Error creating: {exc}")
                    asyncio.get_running_loop().call_later(1.0, self._schedule, ("rs", ns, name))
                    break
        elif len(active) > desired:
            phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}
            # The real controller deletes unscheduled, then pending, then not-ready pods
            # first, and the youngest among equals: sort youngest-first, then stably by rank.
            victims = sorted(active, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
            victims.sort(
                key=lambda p: (
                    bool(p["spec"].get("nodeName")),
                    phase_rank.get(p.get("status", {}).get("phase", "Pending"), 0),
                    self._pod_ready(p),
                )
            )
            for p in victims[: len(active) - desired]:
                self._delete(PODS, p)
        active = active_pods()
        ready = sum(1 for p in active if self._pod_ready(p))
        status: Obj = {"replicas": len(active)}
        if active:
            status["fullyLabeledReplicas"] = len(active)
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        status["observedGeneration"] = rs["metadata"].get("generation", 1)
        if status != rs.get("status"):
            upd = copy.deepcopy(rs)
            upd["status"] = status
            self._commit(REPLICASETS, upd, "MODIFIED", rs)
