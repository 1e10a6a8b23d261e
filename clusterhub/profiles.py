"""Profiles: what an admin offers, and what a user picks on the spawn form.

A profile names the engines a user's space gets (Dask always; Spark and/or
IPyParallel optionally) and the bounds on sizes the user may choose. The user
never names an image, a command or a resource outside these bounds: every value
from a form or an API body is checked here, and an error names the field and
the allowed range.

The same functions serve the local and the Kubernetes spawner and the gateway's
per-user limits.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .engines import OPTIONAL_ENGINES
from .usererror import UserError, number, whole_number

# The sizes a user may choose, with the absolute bounds an admin may set them within.
SIZE_FIELDS = {
    "workers": ("Workers per engine", 0, 64),
    "worker_cores": ("Cores per worker", 1, 64),
    "worker_memory_gib": ("Memory per worker (GiB)", 1, 256),
}

# The notebook server's own size: a guarantee (what it is scheduled with) and a limit (what
# it may use), like zero-to-jupyterhub's singleuser.cpu and singleuser.memory. On Kubernetes
# they are the notebook container's requests and limits; on one machine the memory limit is
# the notebook's share of the user's control group. field -> (label, lowest, highest).
NOTEBOOK_FIELDS = {
    "cpu": ("Notebook CPUs", 0.1, 64.0),
    "memory_gib": ("Notebook memory (GiB)", 0.5, 256.0),
}
DEFAULT_NOTEBOOK = {
    "cpu": {"guarantee": 0.5, "limit": 1.0},
    "memory_gib": {"guarantee": 1.0, "limit": 2.0},
}

DEFAULT_PROFILES: list[dict[str, Any]] = [
    {
        "slug": "dask",
        "display_name": "Dask",
        "description": "JupyterLab with a personal Dask Gateway cluster.",
        "default": True,
        "engines": [],
        "workers": {"default": 2, "max": 8},
        "worker_cores": {"default": 1, "max": 2},
        "worker_memory_gib": {"default": 1, "max": 4},
    },
    {
        "slug": "dask-spark",
        "display_name": "Dask + Spark",
        "description": "Adds a personal Spark standalone master and workers.",
        "engines": ["spark"],
        # The kernel's Spark driver is a JVM in the notebook.
        "notebook": {
            "cpu": {"guarantee": 0.5, "limit": 1},
            "memory_gib": {"guarantee": 1.5, "limit": 3},
        },
        "workers": {"default": 2, "max": 4},
        "worker_cores": {"default": 1, "max": 2},
        "worker_memory_gib": {"default": 1, "max": 4},
    },
    {
        "slug": "dask-ipyparallel",
        "display_name": "Dask + IPyParallel",
        "description": "Adds a personal IPyParallel controller and engines.",
        "engines": ["ipyparallel"],
        "workers": {"default": 2, "max": 8},
        "worker_cores": {"default": 1, "max": 2},
        "worker_memory_gib": {"default": 1, "max": 4},
    },
]


@dataclass(frozen=True)
class SpaceOptions:
    """A user's validated choices for their space."""

    profile: str
    workers: int
    worker_cores: int
    worker_memory_gib: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_notebook(where: str, sizes: Any) -> dict[str, dict[str, float]]:
    """A profile's ``notebook`` sizes, normalised; missing parts take DEFAULT_NOTEBOOK's."""
    if sizes is None:
        sizes = {}
    if not isinstance(sizes, Mapping) or set(sizes) - set(NOTEBOOK_FIELDS):
        raise ValueError(f"{where}: must be a mapping with keys {sorted(NOTEBOOK_FIELDS)}")
    result = {}
    for field, (_label, low, high) in NOTEBOOK_FIELDS.items():
        bounds = sizes.get(field, {})
        if not isinstance(bounds, Mapping) or set(bounds) - {"guarantee", "limit"}:
            raise ValueError(f"{where}.{field}: must be a mapping with 'guarantee' and 'limit'")
        default = DEFAULT_NOTEBOOK[field]
        limit = number(
            f"{where}.{field}.limit", bounds.get("limit", default["limit"]), low=low, high=high
        )
        guarantee = number(
            f"{where}.{field}.guarantee",
            bounds.get("guarantee", min(default["guarantee"], limit)),
            low=low,
            high=limit,
        )
        result[field] = {"guarantee": guarantee, "limit": limit}
    return result


def validate_profiles(profiles: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check an admin's profile list; return it normalised. Errors name the exact key."""
    if not isinstance(profiles, list) or not profiles:
        raise ValueError("profiles: must be a non-empty list of profiles")
    seen: set[str] = set()
    result = []
    for index, profile in enumerate(profiles):
        where = f"profiles[{index}]"
        if not isinstance(profile, Mapping):
            raise ValueError(f"{where}: must be a mapping")
        known = {
            "slug",
            "display_name",
            "description",
            "default",
            "engines",
            "notebook",
            *SIZE_FIELDS,
        }
        unknown = sorted(set(profile) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
        slug = profile.get("slug")
        if not isinstance(slug, str) or not slug or not slug.replace("-", "").isalnum():
            raise ValueError(f"{where}.slug: must be letters, digits and '-', not {slug!r}")
        if slug in seen:
            raise ValueError(f"{where}.slug: {slug!r} is used by two profiles")
        seen.add(slug)
        engines = profile.get("engines", [])
        if not isinstance(engines, list) or any(e not in OPTIONAL_ENGINES for e in engines):
            raise ValueError(f"{where}.engines: must be a list drawn from {list(OPTIONAL_ENGINES)}")
        normalised: dict[str, Any] = {
            "slug": slug,
            "display_name": str(profile.get("display_name", slug)),
            "description": str(profile.get("description", "")),
            "default": bool(profile.get("default", False)),
            "engines": list(engines),
            "notebook": validate_notebook(f"{where}.notebook", profile.get("notebook")),
        }
        for field, (_label, low, high) in SIZE_FIELDS.items():
            bounds = profile.get(field, {})
            if not isinstance(bounds, Mapping) or set(bounds) - {"default", "max"}:
                raise ValueError(f"{where}.{field}: must be a mapping with 'default' and 'max'")
            top = whole_number(f"{where}.{field}.max", bounds.get("max", high), low=low, high=high)
            default = whole_number(
                f"{where}.{field}.default",
                bounds.get("default", min(low + 1, top)),
                low=low,
                high=top,
            )
            normalised[field] = {"default": default, "max": top}
        result.append(normalised)
    if sum(p["default"] for p in result) > 1:
        raise ValueError("profiles: at most one profile may have default: true")
    return result


def default_profile(profiles: list[dict[str, Any]]) -> dict[str, Any]:
    return next((p for p in profiles if p["default"]), profiles[0])


def find_profile(profiles: list[dict[str, Any]], slug: Any) -> dict[str, Any]:
    for profile in profiles:
        if profile["slug"] == slug:
            return profile
    choices = ", ".join(p["slug"] for p in profiles)
    raise UserError(f"profile: unknown profile {slug!r}; choose one of: {choices}", field="profile")


def profile_maxima(profile: Mapping[str, Any]) -> dict[str, Any]:
    """A profile's maxima of the sizes a user chooses: what bounds their clusters."""
    return {field: profile[field]["max"] for field in SIZE_FIELDS}


def validate_options(
    profiles: list[dict[str, Any]], options: Mapping[str, Any], *, text: bool = False
) -> SpaceOptions:
    """Turn a user's raw choices (an API body, or with ``text`` the spawn form's fields) into
    SpaceOptions, or raise UserError.

    Missing sizes take the profile's defaults; a missing profile is the default profile.
    """
    if not isinstance(options, Mapping):
        raise UserError("options: must be a mapping of option names to values", field="options")
    known = {"profile", *SIZE_FIELDS}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"{unknown[0]}: unknown option; allowed: {sorted(known)}", field=unknown[0])
    slug = options.get("profile")
    profile = default_profile(profiles) if slug in (None, "") else find_profile(profiles, slug)
    sizes = {}
    for field, (_label, low, _high) in SIZE_FIELDS.items():
        bounds = profile[field]
        raw = options.get(field)
        if raw is None or raw == "":
            sizes[field] = bounds["default"]
        else:
            sizes[field] = whole_number(field, raw, low=low, high=bounds["max"], text=text)
    return SpaceOptions(profile=profile["slug"], **sizes)


def options_from_form(profiles: list[dict[str, Any]], formdata: Mapping[str, list[str]]):
    """JupyterHub hands form fields over as lists of strings; take the single value of each."""
    flat: dict[str, Any] = {}
    for key, values in formdata.items():
        # The form also carries JupyterHub's own fields (_xsrf) and uploads (*_file).
        if key.startswith("_") or key.endswith("_file"):
            continue
        if len(values) != 1:
            raise UserError(f"{key}: must be given exactly once", field=key)
        flat[key] = values[0]
    return validate_options(profiles, flat, text=True)


def memory_budget_gib(profile: Mapping[str, Any]) -> float:
    """A user's memory limit with ``profile``: the notebook's limit, plus for Dask and each
    engine its maximum workers at their maximum memory."""
    clusters = 1 + len(profile["engines"])
    per_cluster = profile["workers"]["max"] * profile["worker_memory_gib"]["max"]
    return profile["notebook"]["memory_gib"]["limit"] + clusters * per_cluster


def render_form(profiles: list[dict[str, Any]], show_memory_limit: bool = False) -> str:
    """The spawn form: one radio button per profile, number fields bounded by the profile.

    With ``show_memory_limit`` (users are fenced), each profile shows its memory limit."""
    chosen = default_profile(profiles)
    rows = []
    for profile in profiles:
        checked = " checked" if profile is chosen else ""
        engines = ", ".join(["dask", *profile["engines"]])
        limit = ""
        if show_memory_limit:
            notebook = profile["notebook"]["memory_gib"]["limit"]
            limit = (
                f'<br><small class="clusterhub-memory-limit">Memory limit: '
                f"{memory_budget_gib(profile):g} GiB "
                f"(notebook {notebook:g} GiB + up to {profile['workers']['max']} "
                f"workers x {profile['worker_memory_gib']['max']} GiB per cluster)</small>"
            )
        rows.append(
            '<label class="clusterhub-profile" style="display:block;margin-bottom:.5em">'
            f'<input type="radio" name="profile" value="{html.escape(profile["slug"])}"{checked}>'
            f" <strong>{html.escape(profile['display_name'])}</strong>"
            f" <small>({html.escape(engines)})</small><br>"
            f"<span>{html.escape(profile['description'])}</span>{limit}</label>"
        )
    top = {field: max(p[field]["max"] for p in profiles) for field in SIZE_FIELDS}
    for field, (label, low, _high) in SIZE_FIELDS.items():
        default = chosen[field]["default"]
        rows.append(
            f'<label for="clusterhub-{field}">{html.escape(label)}'
            f" (up to the profile's limit)</label>"
            f'<input class="form-control" type="number" id="clusterhub-{field}" name="{field}"'
            f' min="{low}" max="{top[field]}" value="{default}">'
        )
    return "\n".join(rows)
