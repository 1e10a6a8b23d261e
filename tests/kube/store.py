"""The emulator's object store: create, read, update, patch and delete with a real API
server's checks and metadata, every change recorded for watches (see emulator.py)."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

from .apiparts import _Event, _strip_rv
from .base import Obj, now_iso, random_suffix
from .defaults import _qos_class, _strip_type, default_pod_spec
from .errors import (
    ApiError,
    _label_errors,
    _name_errors,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
)
from .patches import apply_patch
from .resources import (
    CLAIMS,
    DEPLOYMENTS,
    NAMESPACES,
    NODES,
    PODS,
    REPLICASETS,
    SECRETS,
    SERVICES,
    ResourceType,
)
from .selectors import (
    label_selector_object_matches,
)


class ObjectStore:
    """Storage primitives and the core operations of :class:`~.emulator.KubeEmulator`."""

    # ---------------------------------------------------------------- storage primitives

    def _get_obj(self, rt: ResourceType, ns: str | None, name: str) -> Obj | None:
        return self._objects[rt.key].get((ns or "", name))

    def _objects_in(self, rt: ResourceType, ns: str | None) -> list[Obj]:
        items = [o for (ons, _), o in self._objects[rt.key].items() if ns is None or ons == ns]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    def _commit(self, rt: ResourceType, obj: Obj, etype: str, old: Obj | None = None) -> Obj:
        """Store (or remove, for DELETED) an object under a new resourceVersion."""
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key = (meta.get("namespace", ""), meta["name"])
        if etype == "DELETED":
            self._objects[rt.key].pop(key, None)
            self._uids.pop(meta["uid"], None)
        else:
            self._objects[rt.key][key] = obj
            self._uids[meta["uid"]] = (rt.key, key)
        event = _Event(self._rv, rt.key, etype, obj, old)
        if self._history.maxlen and len(self._history) == self._history.maxlen:
            self._history_floor = self._history[0].rv
        self._history.append(event)
        for w in self._watchers:
            if w.rt_key == rt.key:
                w.queue.put_nowait(event)
        self._on_change(rt, event)
        return obj

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        gone = copy.deepcopy(obj)
        self._commit(rt, gone, "DELETED", obj)
        self._schedule(("gc",))
        return gone

    # ---------------------------------------------------------------- core operations

    def _check_body(self, rt: ResourceType, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request must be a {rt.kind} object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind and kind != rt.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        return body

    def _with_type(self, rt: ResourceType, obj: Obj) -> Obj:
        out = {"kind": rt.kind, "apiVersion": rt.api_version}
        out.update(_strip_type(obj))
        return out

    def _namespace_usable(self, rt: ResourceType, ns: str, name: str) -> None:
        ns_obj = self._get_obj(NAMESPACES, None, ns)
        if ns_obj is None:
            raise not_found(NAMESPACES, ns)
        if ns_obj.get("status", {}).get("phase") == "Terminating":
            why = f"unable to create new content in namespace {ns} because it is being terminated"
            raise forbidden(
                rt,
                name,
                why,
                [{"reason": "NamespaceTerminating", "message": why, "field": "metadata.namespace"}],
            )

    def _create(self, rt: ResourceType, ns: str | None, body: Any) -> Obj:
        obj = copy.deepcopy(self._check_body(rt, body))
        meta = obj.get("metadata") or {}
        if rt.namespaced:
            assert ns is not None
            if meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + random_suffix()
        if not name:
            raise invalid(
                rt, "", [("metadata.name", "Required value: name or generateName is required")]
            )
        meta["name"] = name
        errors = [("metadata.name", e) for e in _name_errors(name, rt.name_rule)]
        errors += _label_errors(meta.get("labels"), "metadata.labels")
        if errors:
            raise invalid(rt, name, errors)
        if rt.namespaced:
            self._namespace_usable(rt, ns or "", name)
        self._check_escalation(rt, obj, ns)
        if self._get_obj(rt, ns, name) is not None:
            raise already_exists(rt, name)
        for k in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "generation",
        ):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        obj["metadata"] = meta
        obj = self._with_type(rt, obj)
        self._prepare_create(rt, obj)
        return self._commit(rt, obj, "ADDED")

    def _prepare_create(self, rt: ResourceType, obj: Obj) -> None:
        """Per-kind defaulting and validation on create."""
        meta, name = obj["metadata"], obj["metadata"]["name"]
        if rt.has_status and rt is not NODES:
            obj["status"] = {}
        if rt is NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
        elif rt is PODS:
            spec = obj.get("spec")
            if not isinstance(spec, dict) or not spec.get("containers"):
                raise invalid(rt, name, [("spec.containers", "Required value")])
            errors = []
            for n, c in enumerate(spec["containers"]):
                if not c.get("name"):
                    errors.append((f"spec.containers[{n}].name", "Required value"))
                if not c.get("image"):
                    errors.append((f"spec.containers[{n}].image", "Required value"))
            if errors:
                raise invalid(rt, name, errors)
            default_pod_spec(spec)
            self._admit(rt, obj)
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        elif rt is SERVICES:
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("clusterIP") != "None":
                if not spec.get("ports"):
                    raise invalid(rt, name, [("spec.ports", "Required value")])
                spec["clusterIP"] = self._allocate_ip()
                spec["clusterIPs"] = [spec["clusterIP"]]
            else:
                spec["clusterIPs"] = ["None"]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            obj["status"] = {"loadBalancer": {}}
            self._admit(rt, obj)
        elif rt is SECRETS:
            self._normalise_secret(obj)
        elif rt in (DEPLOYMENTS, REPLICASETS):
            self._validate_workload(rt, obj)
            meta["generation"] = 1
        elif rt is CLAIMS:
            obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
            obj["status"] = {"phase": "Pending"}
            self._admit(rt, obj)

    def _normalise_secret(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        obj.setdefault("type", "Opaque")
        data = obj.get("data") or {}
        for k, v in data.items():
            try:
                base64.b64decode(v, validate=True)
            except Exception:
                raise invalid(
                    SECRETS, name, [(f"data[{k}]", "Invalid value: illegal base64 data")]
                ) from None
        for k, v in (obj.pop("stringData", None) or {}).items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        if data:
            obj["data"] = data

    def _validate_workload(self, rt: ResourceType, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        if rt is DEPLOYMENTS:
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                },
            )
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
        errors: list[tuple[str, str]] = []
        selector = spec.get("selector")
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not selector:
            errors.append(("spec.selector", "Required value"))
        elif not label_selector_object_matches(selector, labels):
            errors.append(
                (
                    "spec.template.metadata.labels",
                    f"Invalid value: {json.dumps(labels)}: `selector` does not match template "
                    "`labels`",
                )
            )
        errors += _label_errors(labels, "spec.template.metadata.labels")
        if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 0:
            errors.append(("spec.replicas", "Invalid value: must be greater than or equal to 0"))
        tspec = template.get("spec")
        if not isinstance(tspec, dict) or not tspec.get("containers"):
            errors.append(("spec.template.spec.containers", "Required value"))
        else:
            default_pod_spec(tspec)
        if errors:
            raise invalid(rt, name, errors)

    def _allocate_ip(self) -> str:
        n = self._next_ip
        self._next_ip += 1
        return f"127.96.{n // 256}.{n % 256}"

    def _get(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self._get_obj(rt, ns, name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _update(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
    ) -> Obj:
        new = copy.deepcopy(self._check_body(rt, body))
        nmeta = new.get("metadata") or {}
        if nmeta.get("name") and nmeta["name"] != name:
            raise bad_request(
                f"the name of the object ({nmeta['name']}) does not match the name on the URL "
                f"({name})"
            )
        if rt.namespaced and nmeta.get("namespace") and nmeta["namespace"] != ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        cur = self._get_obj(rt, ns, name)
        if cur is None:
            if rt.create_on_update and subresource is None:
                nmeta["name"] = name
                new["metadata"] = nmeta
                return self._create(rt, ns, new)
            raise not_found(rt, name)
        cmeta = cur["metadata"]
        if subresource is None:
            self._check_escalation(rt, {**new, "metadata": {**nmeta, "name": name}}, ns)
        if nmeta.get("resourceVersion") and nmeta["resourceVersion"] != cmeta["resourceVersion"]:
            raise conflict(rt, name)
        if nmeta.get("uid") and nmeta["uid"] != cmeta["uid"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {nmeta['uid']}, UID in object meta: "
                f"{cmeta['uid']}",
            )
        if subresource == "status":
            result = copy.deepcopy(cur)
            if "status" in new:
                result["status"] = new["status"]
        else:
            result = self._with_type(rt, new)
            meta = dict(nmeta)
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
                "generateName",
            ):
                if k in cmeta:
                    meta[k] = cmeta[k]
                else:
                    meta.pop(k, None)
            meta.pop("managedFields", None)
            result["metadata"] = meta
            if rt.has_status:
                if "status" in cur:
                    result["status"] = copy.deepcopy(cur["status"])
                else:
                    result.pop("status", None)
            errors = _label_errors(meta.get("labels"), "metadata.labels")
            if errors:
                raise invalid(rt, name, errors)
            self._prepare_update(rt, result, cur)
        if _strip_rv(result) == _strip_rv(cur):
            return cur  # a no-op write gets no new resourceVersion and no event
        result["metadata"]["resourceVersion"] = cmeta["resourceVersion"]
        self._commit(rt, result, "MODIFIED", cur)
        self._maybe_finish_deletion(rt, result)
        return result

    def _prepare_update(self, rt: ResourceType, new: Obj, cur: Obj) -> None:
        name = cur["metadata"]["name"]
        if rt is NAMESPACES:
            new["spec"] = copy.deepcopy(cur.get("spec", {}))
            new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        elif rt is PODS:
            spec = new.get("spec") or {}
            default_pod_spec(spec)
            allowed = copy.deepcopy(cur["spec"])
            for field_name in ("containers", "initContainers"):
                for c_new, c_allowed in zip(
                    spec.get(field_name) or [], allowed.get(field_name) or [], strict=False
                ):
                    if "image" in c_new:
                        c_allowed["image"] = c_new["image"]
            for k in ("activeDeadlineSeconds", "tolerations"):
                if k in spec:
                    allowed[k] = spec[k]
            if spec != allowed:
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "spec",
                            "Forbidden: pod updates may not change fields other than "
                            "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                            "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions "
                            "to existing tolerations), `spec.terminationGracePeriodSeconds` "
                            "(allow it to be set to 1 if it was previously negative)",
                        )
                    ],
                )
            new["spec"] = spec
        elif rt is SERVICES:
            spec = new.setdefault("spec", {})
            cspec = cur.get("spec", {})
            for k in ("clusterIP", "clusterIPs"):
                if not spec.get(k):
                    spec[k] = copy.deepcopy(cspec.get(k))
                elif spec[k] != cspec.get(k):
                    raise invalid(rt, name, [(f"spec.{k}", "Invalid value: field is immutable")])
            for k in ("type", "sessionAffinity", "ipFamilies", "ipFamilyPolicy"):
                if k in cspec:
                    spec.setdefault(k, cspec[k])
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
        elif rt is SECRETS:
            if cur.get("immutable") and (
                new.get("data") != cur.get("data") or new.get("stringData")
            ):
                raise invalid(
                    rt, name, [("data", "Forbidden: field is immutable when `immutable` is set")]
                )
            self._normalise_secret(new)
        elif rt.plural == "configmaps":
            if cur.get("immutable") and (
                new.get("data") != cur.get("data") or new.get("binaryData") != cur.get("binaryData")
            ):
                raise invalid(
                    rt, name, [("data", "Forbidden: field is immutable when `immutable` is set")]
                )
        elif rt in (DEPLOYMENTS, REPLICASETS):
            new_sel = (new.get("spec") or {}).get("selector")
            if new_sel != cur["spec"].get("selector"):
                raise invalid(rt, name, [("spec.selector", "Invalid value: field is immutable")])
            self._validate_workload(rt, new)
            if new["spec"] != cur["spec"]:
                new["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1

    def _patch(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        content_type: str,
        subresource: str | None = None,
    ) -> Obj:
        cur = self._get(rt, ns, name)
        try:
            patched = apply_patch(cur, body, content_type)
        except ValueError as exc:
            raise ApiError(422, "Invalid", str(exc)) from None
        if not isinstance(patched, dict):
            raise bad_request("the patch did not produce an object")
        meta = patched.setdefault("metadata", {})
        # A resourceVersion the patch did not set is the current one: patches are
        # unconditional unless they carry a resourceVersion themselves.
        if isinstance(body, dict) and not (body.get("metadata") or {}).get("resourceVersion"):
            meta["resourceVersion"] = cur["metadata"]["resourceVersion"]
        return self._update(rt, ns, name, patched, subresource)

    def _maybe_finish_deletion(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return
        if rt is NAMESPACES and (obj.get("spec") or {}).get("finalizers"):
            return
        if rt is PODS and (meta.get("deletionGracePeriodSeconds") or 0) > 0:
            return  # the kubelet has to confirm the containers are gone
        self._remove(rt, obj)

    def _delete(
        self,
        rt: ResourceType,
        obj: Obj,
        grace: int | None = None,
        propagation: str | None = None,
        preconditions: Obj | None = None,
    ) -> tuple[Obj, bool]:
        """Delete or start deleting ``obj``; returns (object, removed-from-storage)."""
        meta = obj["metadata"]
        name = meta["name"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        if rt is NAMESPACES:
            return self._delete_namespace(obj), False
        if propagation not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy {propagation!r} is not supported")
        if rt is PODS:
            spec, status = obj.get("spec", {}), obj.get("status", {})
            period = grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30)
            if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
                period = 0
            period = max(int(period), 0)
            current = meta.get("deletionGracePeriodSeconds")
            if meta.get("deletionTimestamp") and current is not None and period >= current:
                return obj, False
            if period > 0:
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = now_iso(period)
                new["metadata"]["deletionGracePeriodSeconds"] = period
                self._commit(rt, new, "MODIFIED", obj)
                return new, False
        if propagation == "Orphan":
            self._orphan_dependents(meta["uid"])
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground" and self._has_dependents(meta["uid"]):
            if "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
        if finalizers:
            new = copy.deepcopy(obj)
            new["metadata"]["finalizers"] = finalizers
            new["metadata"].setdefault("deletionTimestamp", now_iso())
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if new != obj:
                self._commit(rt, new, "MODIFIED", obj)
            self._schedule(("gc",))
            return new, False
        return self._remove(rt, obj), True
