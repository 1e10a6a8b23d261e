"""pytest plugin for kubespawner's suite (``upstream_kubespawner --patient-exec``).

The suite checks a just-started server with ``exec_python(check_up, ..., _retries=3)``: four
execs a second apart. That assumes a server listening within about four seconds of its pod
running; jupyterhub-singleuser takes longer than that on a small machine. With this plugin
each of those tries becomes ten, a second apart, and nothing else changes.
"""

import asyncio

TRIES_PER_RETRY = 10


def pytest_sessionstart(session) -> None:
    import conftest  # kubespawner's tests/conftest.py, loaded by now

    original = conftest._exec_python_in_pod

    async def patient(*args, _retries=0, **kwargs):
        tries = (_retries + 1) * TRIES_PER_RETRY
        for attempt in range(tries):
            try:
                return await original(*args, _retries=0, **kwargs)
            except conftest.ExecError:
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(1)

    conftest._exec_python_in_pod = patient
