"""`clusterhub build` in local mode: environments built from a directory and from a Git
repository made here, failures that name their step and leave the current environment
serving, content updates that keep a user's edits, and (e2e) new servers on the new
environment while a running one keeps its own.

The repositories ask for ``tinypkg``, a wheel written by the test itself: installing it is
real pip work, fast, and needs no package index."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import psutil
import pytest

from clusterhub.accounts import remove_build_account
from clusterhub.build.environments import current_environment, environments_dir
from clusterhub.cli import main
from clusterhub.content import sync_content

pytestmark = [pytest.mark.slow]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AS_ROOT = os.geteuid() == 0
# As root, builds run as this module's own build account (removed at the end).
BUILD_ACCOUNT = f"t{secrets.token_hex(3)}-build"


@pytest.fixture(scope="module", autouse=True)
def build_account():
    yield BUILD_ACCOUNT
    if AS_ROOT:
        remove_build_account(BUILD_ACCOUNT)


@pytest.fixture
def data(tmp_path):
    """The platform's data dir for a test. As root, outside pytest's private (0700) temporary
    tree, because the build account must reach into it as attendees do."""
    if not AS_ROOT:
        yield tmp_path / "data"
        return
    parent = tempfile.mkdtemp(prefix="clusterhub-build-test-", dir="/tmp")
    os.chmod(parent, 0o711)
    try:
        yield Path(parent) / "data"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def write_wheel(directory, version: str) -> str:
    """A pure-Python wheel of ``tinypkg`` whose ``VERSION`` is ``version``."""
    name = f"tinypkg-{version}-py3-none-any.whl"
    dist = f"tinypkg-{version}.dist-info"
    files = {
        "tinypkg/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: tinypkg\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for path, text in files.items():
            data = text.encode()
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
        record.append(f"{dist}/RECORD,,")
        wheel.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(buffer.getvalue())
    return name


def make_repo(path, version="1.0", notebook="v1", post_build=None, extra=None) -> str:
    wheel = write_wheel(os.path.join(path, "binder", "wheels"), version)
    write(os.path.join(path, "binder", "requirements.txt"), f"./binder/wheels/{wheel}\n")
    write(os.path.join(path, "intro.ipynb"), notebook)
    if post_build is not None:
        write(os.path.join(path, "binder", "postBuild"), post_build, 0o755)
    for rel, text in (extra or {}).items():
        write(os.path.join(path, rel), text)
    return path


def git(repo, *args):
    subprocess.run(
        ["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True,
        capture_output=True,
    )


def build(capsys, *args) -> tuple[int, str, str]:
    if "kubernetes" not in args and "--build-account" not in args:
        args = (*args, "--build-account", BUILD_ACCOUNT)
    code = main(["build", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def env_python_says(environment, code: str) -> str:
    result = subprocess.run(
        [environment.python, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def build_dirs(data_dir) -> list[str]:
    root = environments_dir(str(data_dir))
    return sorted(e for e in os.listdir(root) if e.startswith("build-"))


@pytest.fixture(autouse=True)
def quiet_home(tmp_path, monkeypatch):
    """pip and git write into HOME: keep it in the test's directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))


def test_build_from_the_binder_folder(tmp_path, capsys, data):
    code, out, err = build(capsys, os.path.join(REPO, "binder"), "--data-dir", str(data))
    assert code == 0, out + err
    for step in ("[1/8] fetch the repository", "[5/8] install Python packages",
                 "[6/8] run postBuild: skipped", "[8/8] make it current: done"):  # fmt: skip
        assert step in out, out
    environment = current_environment(str(data))
    assert environment.name == "build-1"
    assert env_python_says(environment, "import sys, pandas; print(sys.prefix)") == (
        environment.prefix
    )
    # the console scripts run in the new environment
    with open(os.path.join(environment.bin, "jupyterhub-singleuser")) as f:
        assert f.readline().strip() == f"#!{environment.python}"
    assert os.path.isfile(os.path.join(environment.content, "04-dask-dataframe.ipynb"))
    # the platform's server extension is enabled there too
    listed = subprocess.run(
        [os.path.join(environment.bin, "jupyter"), "server", "extension", "list"],
        capture_output=True,
        text=True,
    )
    assert "clusterhub.labextension" in listed.stdout + listed.stderr


def test_build_from_a_git_repository_at_a_tag_and_a_branch(tmp_path, capsys, data):
    repo = make_repo(str(tmp_path / "repo"), "1.0")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1")
    git(repo, "checkout", "-q", "-b", "next")
    make_repo(repo, "2.0", notebook="v2", post_build=(
        "#!/bin/sh\nset -e\npython -c 'import tinypkg; print(tinypkg.VERSION)' >> built.txt\n"
    ))  # fmt: skip
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v2")
    git(repo, "checkout", "-q", "main")

    code, out, err = build(capsys, repo, "--ref", "v1", "--data-dir", str(data))
    assert code == 0, out + err
    first = current_environment(str(data))
    assert env_python_says(first, "import tinypkg; print(tinypkg.VERSION)") == "1.0"
    # the platform itself is untouched
    assert subprocess.run([sys.executable, "-c", "import tinypkg"]).returncode != 0

    code, out, err = build(capsys, f"file://{repo}", "--ref", "next", "--data-dir", str(data))
    assert code == 0, out + err
    second = current_environment(str(data))
    assert second.name == "build-2" and "commit " in out
    assert env_python_says(second, "import tinypkg; print(tinypkg.VERSION)") == "2.0"
    with open(os.path.join(second.content, "built.txt")) as f:
        assert f.read() == "2.0\n", "postBuild ran once, inside the new environment"
    assert not os.path.exists(os.path.join(second.content, ".git"))
    # the previous environment is still there for servers started before
    assert env_python_says(first, "import tinypkg; print(tinypkg.VERSION)") == "1.0"


@pytest.mark.parametrize(
    "case, step, said",
    [
        ("missing requirement", "install Python packages", "clusterhub-no-such-package-4711"),
        ("failing postBuild", "run postBuild", "postBuild says it broke"),
        ("unknown ref", "fetch the repository", "no-such-ref"),
        ("no spec files", "read the environment files", "no environment files"),
    ],
)
def test_a_failing_build_names_its_step_and_the_old_environment_stays(
    tmp_path, capsys, case, step, said, data
):
    good = make_repo(str(tmp_path / "good"))
    assert build(capsys, good, "--data-dir", str(data))[0] == 0
    before = current_environment(str(data))

    bad = str(tmp_path / "bad")
    args = [bad]
    if case == "missing requirement":
        make_repo(bad, extra={"binder/requirements.txt": "clusterhub-no-such-package-4711\n"})
    elif case == "failing postBuild":
        make_repo(bad, post_build="#!/bin/sh\necho postBuild says it broke\nexit 3\n")
    elif case == "unknown ref":
        make_repo(bad)
        git(bad, "init", "-q")
        git(bad, "add", "-A")
        git(bad, "commit", "-q", "-m", "one")
        args = [bad, "--ref", "no-such-ref"]
    else:
        write(os.path.join(bad, "notes.ipynb"), "{}")

    code, out, err = build(capsys, *args, "--data-dir", str(data))
    assert code == 1, out + err
    assert f"failed at step '{step}'" in err
    assert said in err
    assert "the current environment is still build-1" in err
    assert current_environment(str(data)) == before
    assert build_dirs(data) == ["build-1"], "nothing half-built is left"
    log = os.path.join(environments_dir(str(data)), "logs", "build-2.log")
    assert os.path.isfile(log), "the failed build's log is kept"


def test_apt_txt_packages_already_installed_and_a_start_script(tmp_path, capsys, data):
    repo = make_repo(
        str(tmp_path / "repo"),
        extra={"binder/apt.txt": "# tools\ngit\nprocps\n"},
    )
    write(
        os.path.join(repo, "binder", "start"),
        '#!/bin/sh\nexport WORKSHOP_STARTED_BY=start\nexec "$@"\n',
        0o755,
    )
    code, out, err = build(capsys, repo, "--data-dir", str(data))
    assert code == 0, out + err
    assert "[4/8] install apt packages: done" in out, out
    assert "apt-get" not in out, "both are installed: nothing to install"
    environment = current_environment(str(data))
    assert environment.start and os.access(environment.start, os.X_OK)
    # The server command runs through it, as repo2docker runs `start <command>`.
    wrapped = subprocess.run(
        [environment.start, environment.python, "-c",
         "import os, tinypkg; print(os.environ['WORKSHOP_STARTED_BY'], tinypkg.VERSION)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert wrapped.stdout.split() == ["start", "1.0"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/dir"], "SOURCE: /no/such/dir is neither a directory nor a Git URL"),
        (["{binder}", "--ref", "v1"], "--ref: {binder} is not a Git repository"),
        (["{binder}", "--tag", "x"], "--tag is for --mode kubernetes only"),
        (["{binder}", "--mode", "kubernetes", "--tag", ".bad"], "--tag: '.bad' is not a Docker"),
        (["{binder}", "--mode", "kubernetes", "--image-prefix", "Up/Per"], "--image-prefix:"),
    ],
)
def test_bad_flags_get_one_line_and_change_nothing(tmp_path, capsys, args, message, data):
    binder = os.path.join(REPO, "binder")
    args = [a.format(binder=binder) for a in args]
    if "--mode" not in args:
        args += ["--data-dir", str(data)]
    code, out, err = build(capsys, *args)
    assert code == 2
    assert err.strip() == f"clusterhub build: error: {message.format(binder=binder)}" or (
        err.startswith(f"clusterhub build: error: {message.format(binder=binder)}")
        and len(err.strip().splitlines()) == 1
    ), err
    assert not data.exists()


def test_a_users_edited_notebook_survives_a_content_update_from_a_new_build(tmp_path, capsys, data):
    home, manifest = tmp_path / "home", tmp_path / "content.json"
    repo = make_repo(str(tmp_path / "repo"), notebook="v1")
    assert build(capsys, repo, "--data-dir", str(data))[0] == 0
    first = current_environment(str(data))
    sync_content(first.content, str(home), str(manifest), first.content_exclude)
    assert (home / "intro.ipynb").read_text() == "v1"
    assert not (home / "binder").exists(), "the environment files are not content"
    (home / "intro.ipynb").write_text("my notes")

    make_repo(repo, notebook="v2", extra={"part2.ipynb": "new"})
    assert build(capsys, repo, "--data-dir", str(data))[0] == 0
    second = current_environment(str(data))
    report = sync_content(second.content, str(home), str(manifest), second.content_exclude)
    assert report.kept == ["intro.ipynb"] and report.added == ["part2.ipynb"]
    assert (home / "intro.ipynb").read_text() == "my notes"
    assert (home / "intro.workshop-update.ipynb").read_text() == "v2"


def test_environment_yml_pip_section_and_conda_packages(tmp_path, capsys, data):
    repo = str(tmp_path / "repo")
    wheel = write_wheel(os.path.join(repo, "wheels"), "3.0")
    write(
        os.path.join(repo, "environment.yml"),
        "name: demo\nchannels: [conda-forge]\ndependencies:\n"
        f"  - python={sys.version_info[0]}.{sys.version_info[1]}\n"
        "  - pip\n  - six\n  - r-base=4.3\n"
        f"  - pip:\n    - ./wheels/{wheel}\n",
    )
    code, out, err = build(capsys, repo, "--data-dir", str(data))
    assert code == 0, out + err
    assert "conda packages pip cannot install, left out: r-base=4.3" in out
    environment = current_environment(str(data))
    assert env_python_says(environment, "import tinypkg, six; print(tinypkg.VERSION)") == "3.0"
    record = json.load(open(os.path.join(os.path.dirname(environment.prefix), "build.json")))
    assert record["complete"] is True


@pytest.mark.skipif(not AS_ROOT, reason="there is a build account only when run as root")
def test_a_repositorys_code_runs_as_the_build_account_and_sees_nothing_of_the_platform(
    tmp_path, capsys, data, monkeypatch
):
    monkeypatch.setenv("CLUSTERHUB_WORKSHOP_CODE", "tea-biscuit-4711")
    data.mkdir()
    secrets_file = data / "secrets.json"
    secrets_file.write_text('{"workshop_code": "tea-biscuit-4711"}')
    secrets_file.chmod(0o600)
    post_build = f"""#!/bin/sh
id
id -un > "$HOME/whoami"
env > "$HOME/env"
cat {secrets_file} > "$HOME/secrets" 2>&1 || echo refused >> "$HOME/secrets"
cat /etc/shadow > "$HOME/shadow" 2>&1 || echo refused >> "$HOME/shadow"
cat binder/requirements.txt > "$HOME/own"
touch "$HOME/world-writable" && chmod 0777 "$HOME/world-writable"
setsid sleep 600 < /dev/null > /dev/null 2>&1 &
"""
    repo = make_repo(str(tmp_path / "repo"), post_build=post_build)
    code, out, err = build(capsys, repo, "--data-dir", str(data))
    assert code == 0, out + err
    builder = pwd.getpwnam(BUILD_ACCOUNT)
    assert f"the repository's code runs as {BUILD_ACCOUNT} (uid {builder.pw_uid})" in out
    log = (Path(environments_dir(str(data))) / "logs" / "build-1.log").read_text()
    assert f"uid={builder.pw_uid}({BUILD_ACCOUNT})" in log, log

    environment = current_environment(str(data))
    home = Path(environment.prefix).parent / "home"
    assert (home / "whoami").read_text().strip() == BUILD_ACCOUNT
    env = (home / "env").read_text()
    assert "tea-biscuit-4711" not in env and "CLUSTERHUB" not in env, env
    assert "refused" in (home / "secrets").read_text()
    assert "tea-biscuit-4711" not in (home / "secrets").read_text()
    assert "refused" in (home / "shadow").read_text()
    assert "wheels" in (home / "own").read_text(), "its own repository it reads"

    # Taken back: nothing of the build account runs, nothing it made is writable by others.
    running = [
        p
        for p in psutil.process_iter(["uids", "status"])
        if p.info["uids"].real == builder.pw_uid and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert not running, running
    for dirpath, dirnames, filenames in os.walk(Path(environment.prefix).parent):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            info = os.lstat(name)
            assert info.st_uid == 0, f"{name} is not root's"
            if not stat.S_ISLNK(info.st_mode):
                assert not info.st_mode & 0o022, f"{name} is writable by others"
    # Attendees run from it: their processes can still use it.
    nobody = pwd.getpwnam("nobody")
    said = subprocess.run(
        [environment.python, "-c", "import tinypkg; print(tinypkg.VERSION)"],
        capture_output=True, text=True, user=nobody.pw_uid, group=nobody.pw_gid, cwd="/",
    )  # fmt: skip
    assert said.stdout.strip() == "1.0", said.stderr


def test_links_out_of_the_repository_are_refused_and_named(tmp_path, capsys, data):
    repo = make_repo(str(tmp_path / "repo"))
    os.symlink("/etc/shadow", os.path.join(repo, "secrets"))
    os.symlink("/etc/shadow", os.path.join(repo, "binder", "start"))
    os.symlink("intro.ipynb", os.path.join(repo, "same.ipynb"))  # inside: an ordinary file
    shadow = os.stat("/etc/shadow")

    code, out, err = build(capsys, repo, "--data-dir", str(data))
    assert code == 1, out + err
    assert "failed at step 'fetch the repository'" in err
    assert "binder/start -> /etc/shadow, secrets -> /etc/shadow" in err, err
    assert "same.ipynb" not in err
    assert os.stat("/etc/shadow").st_mode == shadow.st_mode, "nothing was made executable"
    assert build_dirs(data) == []

    # Control: the same repository without them builds, its inner link included.
    os.unlink(os.path.join(repo, "secrets"))
    os.unlink(os.path.join(repo, "binder", "start"))
    assert build(capsys, repo, "--data-dir", str(data))[0] == 0
    environment = current_environment(str(data))
    assert os.path.islink(os.path.join(environment.content, "same.ipynb"))


@pytest.mark.e2e
def test_new_servers_use_the_new_environment_running_ones_keep_theirs(tmp_path):
    from hubclient import BrowserUser, RunningPlatform

    platform = RunningPlatform(str(tmp_path / "platform"))
    platform.start()
    kernels = []
    try:
        before = BrowserUser(platform, "before")
        before.login().raise_for_status()
        assert before.spawn(profile="dask").status_code == 302
        before.wait_ready()
        old_kernel = before.kernel()
        kernels.append(old_kernel)

        repo = make_repo(str(tmp_path / "repo"), "5.0")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "clusterhub.cli",
                "build",
                repo,
                "--data-dir",
                platform.data_dir,
                "--build-account",
                BUILD_ACCOUNT,
            ],  # fmt: skip
            capture_output=True,
            text=True,
            env={**platform.env()},
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        environment = current_environment(platform.data_dir)

        after = BrowserUser(platform, "after")
        after.login().raise_for_status()
        assert after.spawn(profile="dask-ipyparallel", workers=1).status_code == 302
        after.wait_ready()
        new_kernel = after.kernel()
        kernels.append(new_kernel)
        probe = (
            "import sys, os\n"
            "try:\n    import tinypkg; v = tinypkg.VERSION\n"
            "except ImportError:\n    v = None\n"
            "print(sys.prefix, v)\n"
        )
        assert new_kernel.execute(probe).split() == [environment.prefix, "5.0"]
        # the running server (started before the build) keeps the platform's environment
        old_prefix, old_version = old_kernel.execute(probe).split()
        assert old_prefix != environment.prefix and old_version == "None"

        # the new user's gateway cluster and IPyParallel engines run in the new environment
        out = new_kernel.execute(
            "from dask_gateway import Gateway\n"
            "import ipyparallel as ipp\n"
            "cluster = Gateway().new_cluster()\n"
            "cluster.scale(1)\n"
            "client = cluster.get_client()\n"
            "client.wait_for_workers(1, timeout=120)\n"
            "def where():\n    import sys, tinypkg\n    return sys.prefix + ' ' + tinypkg.VERSION\n"
            "print(set(client.run(where).values()))\n"
            "print(client.run_on_scheduler(where))\n"
            "rc = ipp.Client()\n"
            "rc.wait_for_engines(1, timeout=120, interactive=False)\n"
            "print(set(rc[:].apply_sync(where)))\n"
            "cluster.shutdown()\n",
            timeout=240,
        )
        expected = f"{environment.prefix} 5.0"
        assert out.splitlines() == [f"{{'{expected}'}}", expected, f"{{'{expected}'}}"], out
        # the user's home got the new build's content
        assert os.path.isfile(os.path.join(platform.data_dir, "homes", "after", "intro.ipynb"))
    finally:
        for kernel in kernels:
            try:
                kernel.close()
            except Exception:
                pass
        platform.tear_down()


@pytest.mark.images
@pytest.mark.timeout(900)
def test_kubernetes_mode_builds_the_notebook_and_cluster_images_with_one_tag(tmp_path, capsys):
    """With the real Docker engine (a private dockerd, see tests/dockertools.py). The base
    images are clusterhub's `base` image (images/base, on the debootstrap root file system the
    image tests use) and, for the cluster, a child of it with its own command and settings:
    the builder takes any base, and these build in seconds rather than minutes."""
    import shutil
    from pathlib import Path

    from dockertools import (
        IMAGES_DIR,
        docker_daemon,
        extra_ca_dir,
        import_base,
        missing_requirements,
    )

    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    with docker_daemon() as daemon:
        debian = import_base(daemon, tmp_path / "debootstrap.log")
        context = tmp_path / "base-context"
        (context / "extra-ca-certs").mkdir(parents=True)
        for cert in (extra_ca_dir() or Path("/nonexistent")).glob("*.crt"):
            shutil.copy(cert, context / "extra-ca-certs" / cert.name)
        shutil.copy(IMAGES_DIR / "healthcheck.py", context / "healthcheck.py")
        daemon.docker(
            "build", "--network", "host", "-f", str(IMAGES_DIR / "base" / "Dockerfile"),
            "--build-arg", f"BASE_IMAGE={debian}", "-t", "buildtest/notebook-base:1",
            str(context), timeout=600,
        )  # fmt: skip
        cluster_context = tmp_path / "cluster-context"
        cluster_context.mkdir()
        (cluster_context / "Dockerfile").write_text(
            "FROM buildtest/notebook-base:1\n"
            "ENV CLUSTER_ROLE=engine\n"
            'ENTRYPOINT ["python", "-c"]\n'
            'CMD ["print(1)"]\n'
        )
        daemon.docker("build", "-t", "buildtest/cluster-base:1", str(cluster_context))

        repo = make_repo(
            str(tmp_path / "repo"),
            "7.0",
            post_build="#!/bin/sh\nset -e\npython -c 'import tinypkg' && echo ok > built.txt\n",
        )
        values = tmp_path / "values.yaml"
        old_docker = os.environ.get("DOCKER")
        old_host = os.environ.get("DOCKER_HOST")
        os.environ.update(DOCKER=daemon.cli, DOCKER_HOST=daemon.env["DOCKER_HOST"])
        try:
            code, out, err = build(
                capsys, repo, "--mode", "kubernetes",
                "--notebook-image", "buildtest/notebook-base:1",
                "--cluster-image", "buildtest/cluster-base:1",
                "--image-prefix", "buildtest", "--tag", "t1", "--values-file", str(values),
            )  # fmt: skip
        finally:
            for key, old in (("DOCKER", old_docker), ("DOCKER_HOST", old_host)):
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
        assert code == 0, out + err
        assert "[3/5] build the notebook image: done" in out
        text = values.read_text()
        assert "repository: buildtest/notebook" in text and 'tag: "t1"' in text
        assert "repository: buildtest/cluster" in text

        said = daemon.docker(
            "run", "--rm", "--network", "none", "buildtest/notebook:t1",
            "python", "-c", "import tinypkg, os; print(tinypkg.VERSION, open('built.txt').read())",
        ).stdout.split()  # fmt: skip
        assert said == ["7.0", "ok"]
        # the cluster image: the notebook image's layers, the cluster base's command and env
        said = daemon.docker(
            "run", "--rm", "--network", "none", "buildtest/cluster:t1",
            "import tinypkg, os; print(tinypkg.VERSION, os.environ['CLUSTER_ROLE'])",
        ).stdout.split()  # fmt: skip
        assert said == ["7.0", "engine"]
        notebook_layers = daemon.inspect("buildtest/notebook:t1")["RootFS"]["Layers"]
        cluster_layers = daemon.inspect("buildtest/cluster:t1")["RootFS"]["Layers"]
        assert cluster_layers[: len(notebook_layers)] == notebook_layers
