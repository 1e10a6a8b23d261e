"""The emulator's subresources: scale, binding, pods/log and pods/exec (see emulator.py)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import aiohttp
from aiohttp import web

from .apiparts import EXEC_PROTOCOLS, _exec_status
from .base import Obj, now_iso
from .errors import (
    ApiError,
    bad_request,
    conflict,
    invalid,
    method_not_allowed,
)
from .patches import PATCH_TYPES, apply_patch
from .resources import (
    NODES,
    PODS,
    ResourceType,
)
from .selectors import (
    label_selector_to_string,
)


class Subresources:
    """Subresources of :class:`~.emulator.KubeEmulator`."""

    async def _scale(
        self, request: web.Request, rt: ResourceType, ns: str | None, name: str
    ) -> web.StreamResponse:
        method = request.method
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}.get(method)
        if verb is None:
            raise method_not_allowed()
        self._count(request, verb, f"{rt.plural}/scale")
        cur = self._get(rt, ns, name)
        if method == "GET":
            return web.json_response(self._scale_of(cur))
        body = await self._read_body(request)
        if method == "PATCH":
            ctype = request.content_type
            if ctype not in PATCH_TYPES:
                raise ApiError(415, "UnsupportedMediaType", "unsupported patch type")
            try:
                body = apply_patch(self._scale_of(cur), body, ctype)
            except ValueError as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a Scale object")
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            scale_rt = ResourceType("autoscaling", "v1", "scale", "Scale", True)
            raise invalid(
                scale_rt,
                name,
                [("spec.replicas", "Invalid value: must be greater than or equal to 0")],
            )
        brv = (body.get("metadata") or {}).get("resourceVersion")
        if brv and brv != cur["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        new = copy.deepcopy(cur)
        new["spec"]["replicas"] = replicas
        updated = self._update(rt, ns, name, new)
        return web.json_response(self._scale_of(updated))

    @staticmethod
    def _scale_of(obj: Obj) -> Obj:
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"].get("replicas", 0)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": label_selector_to_string(obj["spec"].get("selector")),
            },
        }

    def _bind(self, ns: str | None, name: str, body: Any) -> web.Response:
        pod = self._get(PODS, ns, name)
        target = (body or {}).get("target") or {}
        node = target.get("name")
        if not node:
            raise invalid(
                ResourceType("", "v1", "bindings", "Binding", True),
                name,
                [("target.name", "Required value")],
            )
        if pod["spec"].get("nodeName"):
            raise conflict(
                ResourceType("", "v1", "pods/binding", "Binding", True),
                name,
                f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        if pod["metadata"].get("deletionTimestamp"):
            raise conflict(PODS, name, "pod is being deleted, cannot be assigned to a host")
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        conditions = [
            c for c in new["status"].get("conditions") or [] if c.get("type") != "PodScheduled"
        ]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now_iso(),
            }
        )
        new["status"]["conditions"] = conditions
        self._commit(PODS, new, "MODIFIED", pod)
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            status=201,
        )

    def _pod_container(self, pod: Obj, name: str, container: str | None) -> str:
        """The container a log or exec request means (the only one, or the named one)."""
        spec = pod["spec"]
        names = [c["name"] for c in spec.get("containers") or []]
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        if not container:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(names)}]"
                    + (
                        f" or one of the init containers: [{' '.join(init_names)}]"
                        if init_names
                        else ""
                    )
                )
            container = names[0]
        if container not in names + init_names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        return container

    def _kubelet_url(self, pod: Obj, container: str) -> str:
        """Where the kubelet of the pod's node serves it; 400 while the container waits."""
        spec, name = pod["spec"], pod["metadata"]["name"]
        statuses = {
            s["name"]: s
            for s in (pod.get("status", {}).get("containerStatuses") or [])
            + (pod.get("status", {}).get("initContainerStatuses") or [])
        }
        st = statuses.get(container)
        waiting = st is None or ("waiting" in (st.get("state") or {}) and not st.get("lastState"))
        if not spec.get("nodeName") or waiting:
            reason = (
                ((st or {}).get("state") or {})
                .get("waiting", {})
                .get("reason", "ContainerCreating")
            )
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        node = self._get_obj(NODES, None, spec["nodeName"])
        endpoint = (
            ((node or {}).get("status") or {}).get("daemonEndpoints", {}).get("kubeletEndpoint", {})
        )
        port = endpoint.get("Port")
        address = next(
            (
                a["address"]
                for a in ((node or {}).get("status") or {}).get("addresses") or []
                if a.get("type") == "InternalIP"
            ),
            None,
        )
        if not port or not address:
            raise ApiError(
                500, "InternalError", f"no kubelet endpoint registered for node {spec['nodeName']}"
            )
        return f"http://{address}:{port}"

    async def _pod_log(self, request: web.Request, ns: str | None, name: str) -> web.StreamResponse:
        q = request.query
        pod = self._get(PODS, ns, name)
        container = self._pod_container(pod, name, q.get("container"))
        kubelet = self._kubelet_url(pod, container)
        params = {
            k: q[k]
            for k in ("follow", "tailLines", "previous", "limitBytes", "timestamps")
            if k in q
        }
        assert self._http is not None
        url = f"{kubelet}/containerLogs/{ns}/{name}/{container}"
        async with self._http.get(url, params=params) as upstream:
            if upstream.status != 200:
                text = await upstream.text()
                raise ApiError(
                    upstream.status,
                    "BadRequest" if upstream.status == 400 else "NotFound",
                    text.strip(),
                )
            resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                pass
            return resp

    async def _pod_exec(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        """pods/exec: the kubelet runs the command in the container; its output and exit code
        go back over the WebSocket channel protocol, as ``kubectl exec`` reads them."""
        q = request.query
        flags = ("stdin", "stdout", "stderr", "tty")
        flag = {k: q.get(k, "").lower() in ("1", "true") for k in flags}
        command = q.getall("command", [])
        if not (flag["stdin"] or flag["stdout"] or flag["stderr"]):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        if not command:
            raise bad_request("you must specify at least one command for the container")
        if flag["stdin"] or flag["tty"]:
            raise bad_request("exec with stdin or a tty is not emulated by the test emulator")
        pod = self._get(PODS, ns, name)
        container = self._pod_container(pod, name, q.get("container"))
        kubelet = self._kubelet_url(pod, container)
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS)
        if not ws.can_prepare(request).ok:
            raise bad_request("Upgrade request required")
        await ws.prepare(request)
        assert self._http is not None
        url = f"{kubelet}/exec/{ns}/{name}/{container}"
        async with self._http.post(url, json={"command": command}) as answer:
            if answer.status != 200:
                status = {
                    "metadata": {},
                    "status": "Failure",
                    "message": (await answer.text()).strip(),
                    "reason": "BadRequest",
                    "code": answer.status,
                }
                await ws.send_bytes(b"\x03" + json.dumps(status).encode())
                await ws.close()
                return ws
            result = await answer.json()
        out, err = base64.b64decode(result["stdout"]), base64.b64decode(result["stderr"])
        if flag["stdout"] and out:
            await ws.send_bytes(b"\x01" + out)
        if flag["stderr"] and err:
            await ws.send_bytes(b"\x02" + err)
        await ws.send_bytes(b"\x03" + json.dumps(_exec_status(command, result)).encode())
        await ws.close()
        return ws
