"""Label and field selectors, parsed and matched as the real API server does."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .base import Obj
from .resources import _FIELD_ALIASES, _FIELD_LABELS, ResourceType

_KEY_RE = r"[A-Za-z0-9][-A-Za-z0-9_./]*"


def _split_top_level(text: str) -> list[str]:
    """Split a selector on commas that are not inside ``in (...)`` value lists."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


LabelPredicate = Callable[[dict[str, str]], bool]


def parse_label_selector(text: str | None) -> LabelPredicate:
    """Parse the string form of a label selector into a predicate over a label map."""
    if not text:
        return lambda labels: True
    reqs: list[LabelPredicate] = []
    for term in _split_top_level(text):
        m = re.fullmatch(rf"(!?)\s*({_KEY_RE})", term)
        if m:
            neg, key = m.group(1) == "!", m.group(2)
            reqs.append(lambda lb, k=key, n=neg: (k in lb) != n)
            continue
        m = re.fullmatch(rf"({_KEY_RE})\s+(in|notin)\s*\(([^()]*)\)", term)
        if m:
            key, op = m.group(1), m.group(2)
            values = {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=values: k in lb and lb[k] in vs)
            else:
                reqs.append(lambda lb, k=key, vs=values: k not in lb or lb[k] not in vs)
            continue
        m = re.fullmatch(rf"({_KEY_RE})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)", term)
        if m:
            key, op, value = m.group(1), m.group(2), m.group(3)
            if op == "!=":
                reqs.append(lambda lb, k=key, v=value: k not in lb or lb[k] != v)
            else:
                reqs.append(lambda lb, k=key, v=value: k in lb and lb[k] == v)
            continue
        raise ValueError(f"unable to parse requirement: {term!r}")
    return lambda labels: all(r(labels) for r in reqs)


def label_selector_object_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Match a metav1.LabelSelector object (matchLabels/matchExpressions)."""
    if not selector:
        return False  # an empty/absent selector selects nothing for controllers
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(k) not in values:
            return False
        if op == "NotIn" and k in labels and labels[k] in values:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def label_selector_to_string(selector: Obj | None) -> str:
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{k} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{k} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(k)
        elif op == "DoesNotExist":
            parts.append(f"!{k}")
    return ",".join(parts)


def _field_value(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in _FIELD_ALIASES.get(path, path).split("."):
        if not isinstance(cur, dict):
            cur = None
            break
        cur = cur.get(part)
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if cur is None:
        return "false" if path in ("spec.hostNetwork", "spec.unschedulable") else ""
    return str(cur)


def parse_field_selector(text: str | None, rt: ResourceType) -> Callable[[Obj], bool]:
    if not text:
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace"} | _FIELD_LABELS.get(rt.plural, set())
    reqs: list[Callable[[Obj], bool]] = []
    for term in _split_top_level(text):
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
        key, op, value = m.group(1), m.group(2), m.group(3).strip()
        if key not in allowed:
            raise ValueError(f"field label not supported: {key}")
        if op == "!=":
            reqs.append(lambda o, k=key, v=value: _field_value(o, k) != v)
        else:
            reqs.append(lambda o, k=key, v=value: _field_value(o, k) == v)
    return lambda obj: all(r(obj) for r in reqs)
