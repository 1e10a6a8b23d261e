"""The settings file that ``clusterhub up`` and the Helm chart write and every process
reads: its ``kubernetes`` section is typed once (KubernetesSettings), and a bad one is
refused at load, naming the key."""

from __future__ import annotations

import json

import pytest

from clusterhub.settings import (
    DEFAULT_NAMESPACE_PREFIX,
    KubernetesSettings,
    PlatformSettings,
)

REQUIRED = {
    "hub_namespace": "hub",
    "notebook_image": "registry.example.org/notebook:1",
    "cluster_image": "registry.example.org/cluster:1",
}


def write(tmp_path, **values) -> str:
    data = {
        "data_dir": str(tmp_path),
        "workshop_code": "code",
        "admin_password": "pw",
        "gateway_encrypt_key": "key",
        **values,
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_kubernetes_section_loads_typed_with_its_defaults(tmp_path):
    path = write(tmp_path, mode="kubernetes", kubernetes=dict(REQUIRED, worker_start_timeout=30))
    kube = PlatformSettings.load(path).kubernetes
    assert isinstance(kube, KubernetesSettings)
    assert kube.hub_namespace == "hub"
    assert kube.worker_start_timeout == 30.0
    # What the chart leaves out has one default, here.
    assert kube.namespace_prefix == DEFAULT_NAMESPACE_PREFIX
    assert kube.image_pull_policy == "IfNotPresent"
    assert kube.delete_namespace_on_stop is True
    assert kube.profiles == [] and kube.home_storage == {}


def test_saved_settings_load_back_unchanged(tmp_path):
    path = write(tmp_path, mode="kubernetes", kubernetes=dict(REQUIRED, namespace_prefix="ws-"))
    settings = PlatformSettings.load(path)
    again = str(tmp_path / "again.json")
    settings.save(again)
    loaded = PlatformSettings.load(again)
    assert loaded.to_dict() == settings.to_dict()
    assert loaded.kubernetes.namespace_prefix == "ws-"


@pytest.mark.parametrize(
    ("kubernetes", "message"),
    [
        (dict(REQUIRED, namespace_prefx="ws-"), "kubernetes.namespace_prefx: not a setting"),
        (dict(REQUIRED, keep_home_pvc="yes"), "kubernetes.keep_home_pvc: must be a boolean"),
        (
            dict(REQUIRED, worker_start_timeout="10m"),
            "kubernetes.worker_start_timeout: must be a float",
        ),
        (dict(REQUIRED, profiles={"slug": "dask"}), "kubernetes.profiles: must be a list"),
        (dict(REQUIRED, home_storage={"size": 10}), "kubernetes.home_storage: must be"),
        (
            {k: v for k, v in REQUIRED.items() if k != "cluster_image"},
            "kubernetes.cluster_image: required",
        ),
        (["hub"], "kubernetes: must be an object, not list"),
    ],
)
def test_a_bad_kubernetes_section_is_refused_naming_the_key(tmp_path, kubernetes, message):
    path = write(tmp_path, mode="kubernetes", kubernetes=kubernetes)
    with pytest.raises(ValueError) as refused:
        PlatformSettings.load(path)
    assert message in str(refused.value)


def test_local_mode_needs_no_kubernetes_section(tmp_path):
    settings = PlatformSettings.load(write(tmp_path))
    assert settings.mode == "local"
    assert settings.kubernetes.hub_namespace == ""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"port": "8000"}, "port: must be a whole number, not '8000'"),
        ({"port": True}, "port: must be a whole number, not True"),
        ({"user_accounts": 1}, "user_accounts: must be true or false, not 1"),
        ({"admin_users": "admin"}, "admin_users: must be a list of strings, not 'admin'"),
        ({"workshop_code": None}, "workshop_code: must be a string, not None"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_it(tmp_path, values, message):
    with pytest.raises(ValueError) as refused:
        PlatformSettings.load(write(tmp_path, **values))
    assert message in str(refused.value)


def test_a_missing_required_field_is_refused_naming_it(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path), "workshop_code": "code"}))
    with pytest.raises(ValueError, match="admin_password: required in the settings file"):
        PlatformSettings.load(str(path))
