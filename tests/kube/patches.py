"""JSON merge patch, strategic merge patch (the common patch merge keys, ``$patch``
directives) and JSON patch."""

from __future__ import annotations

import copy
from typing import Any

from .base import Obj


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# patchMergeKey of the list fields clients commonly strategic-merge-patch; other lists are
# replaced, as for fields without a patch strategy in the real API.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}
_PRIMITIVE_SET_LISTS = {"finalizers"}


def _list_merge_key(name: str, items: list[Any]) -> str | None:
    if name == "ports":
        dicts = [i for i in items if isinstance(i, dict)]
        if any("containerPort" in i for i in dicts):
            return "containerPort"
        return "port"
    return _MERGE_KEYS.get(name)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            fname = k.split("/", 1)[1]
            result[fname] = [x for x in result.get(fname) or [] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge_patch(result.get(k), v)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list) and k in _PRIMITIVE_SET_LISTS:
            cur = list(result.get(k) or [])
            result[k] = cur + [x for x in v if x not in cur]
        elif isinstance(v, list) and (mkey := _list_merge_key(k, v)) is not None:
            result[k] = _merge_list(list(result.get(k) or []), v, mkey)
        else:
            result[k] = copy.deepcopy(v)
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(copy.deepcopy(item))
            continue
        idx = next(
            (n for n, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[idx] = strategic_merge_patch(result[idx], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise ValueError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)

    def parent(d: Any, parts: list[str]) -> tuple[Any, str]:
        for p in parts[:-1]:
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d, parts[-1]

    def get(d: Any, parts: list[str]) -> Any:
        for p in parts:
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d

    def add(d: Any, parts: list[str], value: Any) -> Any:
        if not parts:
            return value
        par, last = parent(d, parts)
        if isinstance(par, list):
            if last == "-":
                par.append(value)
            else:
                par.insert(int(last), value)
        else:
            par[last] = value
        return d

    def remove(d: Any, parts: list[str]) -> Any:
        par, last = parent(d, parts)
        if isinstance(par, list):
            return par.pop(int(last))
        return par.pop(last)

    for op in ops:
        kind, path = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind == "add":
                doc = add(doc, path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(doc, path)
            elif kind == "replace":
                get(doc, path)  # must exist
                if path:
                    par, last = parent(doc, path)
                    par[int(last) if isinstance(par, list) else last] = copy.deepcopy(op["value"])
                else:
                    doc = copy.deepcopy(op["value"])
            elif kind == "move":
                value = remove(doc, _pointer(op["from"]))
                doc = add(doc, path, value)
            elif kind == "copy":
                doc = add(doc, path, copy.deepcopy(get(doc, _pointer(op["from"]))))
            elif kind == "test":
                if get(doc, path) != op.get("value"):
                    raise ValueError(f"testing value {op.get('path')} failed")
            else:
                raise ValueError(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(
                f'doc is missing path: "{op.get("path")}": missing value ({exc})'
            ) from None
    return doc


PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


def apply_patch(obj: Obj, body: Any, content_type: str) -> Obj:
    if content_type == "application/json-patch+json":
        return json_patch(obj, body)
    if content_type == "application/merge-patch+json":
        return merge_patch(obj, body)
    return strategic_merge_patch(obj, body)
