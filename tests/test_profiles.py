import pytest

from clusterhub.profiles import (
    DEFAULT_PROFILES,
    options_from_form,
    render_form,
    validate_options,
    validate_profiles,
)
from clusterhub.usererror import UserError

PROFILES = validate_profiles(DEFAULT_PROFILES)


def test_defaults_come_from_the_default_profile():
    assert validate_options(PROFILES, {}).to_dict() == {
        "profile": "dask",
        "workers": 2,
        "worker_cores": 1,
        "worker_memory_gib": 1,
    }


def test_a_chosen_profile_and_sizes_within_its_bounds():
    options = validate_options(PROFILES, {"profile": "dask-spark", "workers": 4, "worker_cores": 2})
    assert options.to_dict() == {
        "profile": "dask-spark",
        "workers": 4,
        "worker_cores": 2,
        "worker_memory_gib": 1,
    }


@pytest.mark.parametrize(
    "options, message",
    [
        ({"profile": "nope"}, "profile: unknown profile 'nope'; choose one of: dask, dask-spark"),
        ({"workers": -1}, "workers: must be a whole number from 0 to 8, not -1"),
        ({"workers": 10**9}, "workers: must be a whole number from 0 to 8, not 1000000000"),
        ({"workers": "three"}, "workers: must be a whole number from 0 to 8, not 'three'"),
        ({"workers": True}, "workers: must be a whole number from 0 to 8, not True"),
        ({"workers": 1.5}, "workers: must be a whole number from 0 to 8, not 1.5"),
        ({"profile": "dask-spark", "workers": 5}, "workers: must be a whole number from 0 to 4"),
        ({"worker_memory_gib": 5}, "worker_memory_gib: must be a whole number from 1 to 4"),
        ({"image": "evil/miner"}, "image: unknown option"),
    ],
)
def test_bad_choices_name_the_field_and_the_allowed_range(options, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_options(PROFILES, options)


def test_form_data_ignores_hub_fields_and_needs_single_values():
    form = {"_xsrf": ["token"], "profile": ["dask-ipyparallel"], "workers": ["3"]}
    assert options_from_form(PROFILES, form).workers == 3
    with pytest.raises(UserError, match="workers: must be given exactly once") as refused:
        options_from_form(PROFILES, {"workers": ["1", "2"]})
    assert (refused.value.field, refused.value.status) == ("workers", 400)


def test_a_form_field_is_text_but_an_api_body_carries_numbers():
    """One validator, told where the value came from: the form's "3" is three workers, an
    API body's "3" is a client's bug."""
    assert options_from_form(PROFILES, {"workers": [" 3 "]}).workers == 3
    with pytest.raises(UserError, match="workers: must be a whole number from 0 to 8, not '3'"):
        validate_options(PROFILES, {"workers": "3"})
    assert validate_options(PROFILES, {"workers": 3}).workers == 3


def test_the_form_offers_every_profile_and_bounds_the_numbers():
    html = render_form(PROFILES)
    for profile in PROFILES:
        assert f'value="{profile["slug"]}"' in html
    assert 'name="workers" min="0" max="8" value="2"' in html
    assert 'value="dask" checked' in html


@pytest.mark.parametrize(
    "profiles, message",
    [
        ([], "profiles: must be a non-empty list"),
        ([{"slug": "a b"}], r"profiles\[0\].slug: must be letters, digits and '-'"),
        ([{"slug": "a"}, {"slug": "a"}], r"profiles\[1\].slug: 'a' is used by two profiles"),
        ([{"slug": "a", "engines": ["mpi"]}], r"profiles\[0\].engines: must be a list drawn from"),
        ([{"slug": "a", "image": "x"}], r"profiles\[0\]: unknown keys \['image'\]"),
        ([{"slug": "a", "workers": {"max": 65}}], r"profiles\[0\].workers.max: must be a whole"),
        (
            [{"slug": "a", "workers": {"default": 5, "max": 4}}],
            r"profiles\[0\].workers.default: must be a whole number from 0 to 4",
        ),
        (
            [{"slug": "a", "notebook": {"gpu": {}}}],
            r"profiles\[0\].notebook: must be a mapping with keys \['cpu', 'memory_gib'\]",
        ),
        (
            [{"slug": "a", "notebook": {"cpu": {"limit": 0}}}],
            r"profiles\[0\].notebook.cpu.limit: must be a number from 0.1 to 64, not 0",
        ),
        (
            [{"slug": "a", "notebook": {"memory_gib": {"guarantee": 4, "limit": 2}}}],
            r"profiles\[0\].notebook.memory_gib.guarantee: must be a number from 0.5 to 2, not 4",
        ),
        (
            [{"slug": "a", "notebook": {"cpu": {"limit": "1"}}}],
            r"profiles\[0\].notebook.cpu.limit: must be a number from 0.1 to 64, not '1'",
        ),
        (
            [{"slug": "a", "default": True}, {"slug": "b", "default": True}],
            "at most one profile may have default: true",
        ),
    ],
)
def test_bad_profile_config_is_refused_with_the_key_named(profiles, message):
    with pytest.raises(ValueError, match=message):
        validate_profiles(profiles)


def test_a_fenced_form_shows_each_profiles_memory_limit_with_the_notebooks_share():
    profiles = validate_profiles(DEFAULT_PROFILES)
    html = render_form(profiles, show_memory_limit=True)
    # dask: notebook 2 GiB + 8 workers x 4 GiB; dask-spark: notebook 3 GiB + 2 x 4 x 4 GiB
    assert "Memory limit: 34 GiB (notebook 2 GiB + up to 8 workers x 4 GiB" in html
    assert "Memory limit: 35 GiB (notebook 3 GiB + up to 4 workers x 4 GiB" in html
    assert "Memory limit" not in render_form(profiles)
