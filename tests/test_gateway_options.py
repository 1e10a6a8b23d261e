"""The gateway's cluster options come from the user's profile, and refusals name the range."""

import pytest
from dask_gateway_server.backends.base import ClusterConfig

from clusterhub.gateway.options import GIB, make_cluster_options
from clusterhub.space import LocalSpace
from clusterhub.usererror import UserError


class User:
    name = "alice"
    groups = ()
    admin = False


@pytest.fixture
def space(tmp_path):
    space = LocalSpace(str(tmp_path), "alice")
    space.create()
    space.write_state(active=True, limits={"workers": 8, "worker_cores": 2, "worker_memory_gib": 4})
    return space


def configuration(space, request):
    options = make_cluster_options(lambda name: space)(User())
    return options.get_configuration(options.parse_options(request), User())


def test_defaults_and_choices_within_the_profile(space):
    # A space recorded without choices (an older server): one core, 1 GiB.
    assert configuration(space, {}) == {
        "worker_cores": 1,
        "worker_threads": 1,
        "worker_memory": GIB,
        "cluster_max_workers": 8,
    }
    chosen = configuration(space, {"worker_cores": 2, "worker_memory": 3.5})
    assert chosen["worker_cores"] == 2 and chosen["worker_memory"] == int(3.5 * GIB)
    # What the handler returns must be a valid ClusterConfig: the gateway builds one from it.
    ClusterConfig(**chosen)


@pytest.mark.parametrize(
    "request_options, message",
    [
        ({"worker_cores": 3}, "worker_cores: must be a number from 1 to 2, not 3"),
        ({"worker_cores": 0}, "worker_cores: must be a number from 1 to 2, not 0"),
        ({"worker_cores": "two"}, "worker_cores: must be a number from 1 to 2, not 'two'"),
        ({"worker_cores": True}, "worker_cores: must be a number from 1 to 2"),
        ({"worker_memory": 100}, "worker_memory: must be a number from 0.5 to 4, not 100"),
        ({"image": "miner:latest"}, "Unknown fields ['image']"),
    ],
)
def test_options_outside_the_profile_are_refused(space, request_options, message):
    with pytest.raises((ValueError, TypeError)) as error:
        configuration(space, request_options)
    assert message in str(error.value)


def test_no_cluster_without_a_running_server(space):
    space.write_state(active=False)
    with pytest.raises(UserError, match="has no running server"):
        configuration(space, {})


def test_the_quiet_dask_settings_reach_dask_as_environment_variables():
    import dask.config

    from clusterhub.gateway.config import QUIET_DASK_CONFIG, dask_environment

    # Dask's own reading of DASK_* variables, as a scheduler or worker does at start.
    read = dask.config.collect_env(dask_environment(QUIET_DASK_CONFIG))
    for key, value in QUIET_DASK_CONFIG.items():
        assert dask.config.get(key, config=read) == value


def test_the_sizes_chosen_on_the_spawn_form_are_the_clusters_defaults(space):
    space.write_state(
        options={"profile": "dask", "workers": 2, "worker_cores": 2, "worker_memory_gib": 3}
    )
    assert configuration(space, {}) == {
        "worker_cores": 2,
        "worker_threads": 2,
        "worker_memory": 3 * GIB,
        "cluster_max_workers": 8,
    }
    # Still only defaults: an explicit choice within the profile wins.
    assert configuration(space, {"worker_cores": 1})["worker_cores"] == 1
    # A recorded choice outside today's bounds (the profile shrank) is brought within them.
    space.write_state(options={"worker_cores": 9, "worker_memory_gib": 0.1})
    assert configuration(space, {})["worker_cores"] == 2
    assert configuration(space, {})["worker_memory"] == int(0.5 * GIB)
    space.write_state(options={"worker_cores": "2", "worker_memory_gib": True})
    assert configuration(space, {})["worker_cores"] == 1, "only numbers are taken"
