#!/usr/bin/env bash
# Build the clusterhub images hub, notebook and cluster (and the layers they share: base,
# core, runtime) from this repository checkout.
#
#   images/build.sh [--base IMAGE] [--ca-dir DIR] [--prefix NAME] [--tag TAG]
#                   [--wheelhouse DIR] [--pip-cache DIR] [--python PYTHON] [--log-dir DIR]
#
#   --base IMAGE      any Debian bookworm image (default debian:bookworm-slim)
#   --ca-dir DIR      extra CA certificates to trust at build and run time: the *.crt and
#                     *.pem files (PEM) in DIR, e.g. /usr/local/share/ca-certificates
#   --prefix NAME     images are called NAME/hub, NAME/notebook, ... (default clusterhub)
#   --tag TAG         their tag (default latest)
#   --wheelhouse DIR  keep the prebuilt wheels of every dependency here, so that the next
#                     build needs no package index when the pins have not changed
#                     (default: a temporary directory)
#   --pip-cache DIR   pip's cache while building the wheelhouse (default: none)
#   --python PYTHON   the Python (with pip) that builds clusterhub's own wheel (default python3)
#   --log-dir DIR     keep each step's log here (default: printed only on failure)
#
# Needs docker (the command is $DOCKER, default docker; DOCKER_HOST etc. are honoured), npm
# ($NPM, default npm) and a Python with pip. Builds use the host network (`docker build
# --network host`): build containers reach the package mirrors the host reaches, and the
# wheelhouse this script serves on 127.0.0.1 while it runs.
#
# Images: base -> core -> hub, and core -> runtime -> notebook, cluster (see images/README.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

base_image=debian:bookworm-slim
ca_dir=""
prefix=clusterhub
tag=latest
wheelhouse=""
pip_cache=""
python=python3
log_dir=""
docker="${DOCKER:-docker}"

say() { printf 'build.sh: %s\n' "$*"; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }
# the comment block at the top of this file
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
        --base | --ca-dir | --prefix | --tag | --wheelhouse | --pip-cache | --python | --log-dir)
            [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case "$1" in
        --base) base_image="$2"; shift 2 ;;
        --ca-dir) ca_dir="$2"; shift 2 ;;
        --prefix) prefix="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --wheelhouse) wheelhouse="$2"; shift 2 ;;
        --pip-cache) pip_cache="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --log-dir) log_dir="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'build.sh: error: unknown option %q\n' "$1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -z "$ca_dir" ] || [ -d "$ca_dir" ] || die "--ca-dir $ca_dir is not a directory"

context="$(mktemp -d "${TMPDIR:-/tmp}/clusterhub-images.XXXXXX")"
server_pid=""
hub_pid=""
cleanup() {
    # a hub build still running in the background needs the context: let it end first
    [ -z "$hub_pid" ] || wait "$hub_pid" 2>/dev/null || true
    [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
    [ -z "$server_pid" ] || wait "$server_pid" 2>/dev/null || true
    rm -rf "$context"
}
trap cleanup EXIT
[ -n "$log_dir" ] || log_dir="$context/logs"
mkdir -p "$log_dir"
[ -n "$wheelhouse" ] || wheelhouse="$context/wheelhouse"
mkdir -p "$wheelhouse"
wheelhouse="$(cd "$wheelhouse" && pwd)"

# run NAME CMD...: run one step with its output in $log_dir/NAME.log, timed; on failure show
# the end of the log.
run() {
    local name="$1" start=$SECONDS
    shift
    if ! "$@" >"$log_dir/$name.log" 2>&1; then
        tail -n 60 "$log_dir/$name.log" >&2
        die "$name failed (log: $log_dir/$name.log)"
    fi
    say "$name: $((SECONDS - start)) s"
}

# -- the build context: only what the Dockerfiles copy --------------------------------------
mkdir -p "$context/extra-ca-certs" "$context/dist" "$context/proxy"
if [ -n "$ca_dir" ]; then
    # update-ca-certificates only reads *.crt
    for cert in "$ca_dir"/*.crt "$ca_dir"/*.pem; do
        [ -f "$cert" ] || continue
        name="$(basename "$cert")"
        cp "$cert" "$context/extra-ca-certs/${name%.*}.crt"
    done
    say "extra CA certificates: $(ls "$context/extra-ca-certs" | tr '\n' ' ')"
fi
cp "$here/healthcheck.py" "$context/"
cp "$repo/package.json" "$repo/package-lock.json" "$context/proxy/"
# configurable-http-proxy at the version package-lock.json pins. Its packages are plain
# JavaScript: installed here, the image needs Node.js but not npm (Debian's npm alone is
# ~360 packages and over a minute of dpkg).
run proxy "${NPM:-npm}" ci --prefix "$context/proxy" --omit=dev --ignore-scripts --no-audit \
    --no-fund
run wheel "$python" -m pip wheel --no-deps --wheel-dir "$context/dist" "$repo"
wheel="$(basename "$(ls "$context"/dist/clusterhub-*.whl)")"
# Its dependencies by image, installed before the wheel: their layers stay cached while only
# clusterhub's own code changes.
"$python" "$here/requirements.py" "$context/dist/$wheel" "$context/requirements"
version="${wheel#clusterhub-}"
version="${version%%-*}"

build() {  # build NAME DOCKERFILE_DIR BUILD_ARGS...
    local name="$1" dir="$2"
    shift 2
    run "$name" "$docker" build --network host --force-rm \
        --label "org.opencontainers.image.title=clusterhub-$name" \
        --label "org.opencontainers.image.version=$version" \
        -f "$here/$dir/Dockerfile" -t "$prefix/$name:$tag" "$@" "$context"
}

build base base --build-arg "BASE_IMAGE=$base_image"

# -- the wheelhouse: every dependency as a wheel, built once by the base image's own Python -
# (pyspark alone is a 456 MB sdist that takes a minute to build). The images then install
# from it with no index and no cache mount, and the wheels never end up in an image layer.
requirement="clusterhub[spark,kubernetes,dataframe] @ file:///dist/$wheel"
# Never our own wheel: it keeps its version between builds, and pip would take a stale copy
# from here (with the old dependencies) instead of the one just built.
rm -f "$wheelhouse"/clusterhub-*.whl
cache_args=()
[ -z "$pip_cache" ] || { mkdir -p "$pip_cache"; cache_args=(-v "$pip_cache:/pip-cache" -e PIP_CACHE_DIR=/pip-cache); }
run wheelhouse "$docker" run --rm --network host --user "$(id -u):$(id -g)" -e HOME=/tmp \
    -v "$wheelhouse:/wheelhouse" -v "$context/dist:/dist:ro" "${cache_args[@]}" \
    "$prefix/base:$tag" sh -ec '
        # Complete already (same pins as last time)? Then no index is needed at all.
        if pip install --dry-run --ignore-installed --no-index --find-links /wheelhouse "$1" \
            >/dev/null 2>&1; then
            echo "the wheelhouse has every requirement"
        else
            pip wheel --use-pep517 --wheel-dir /wheelhouse --find-links /wheelhouse "$1"
        fi' sh "$requirement"

"$python" "$here/wheelhouse_server.py" "$wheelhouse" "$context/wheelhouse-port" \
    >"$log_dir/wheelhouse-server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    [ -f "$context/wheelhouse-port" ] && break
    kill -0 "$server_pid" 2>/dev/null || die "the wheelhouse server did not start ($log_dir/wheelhouse-server.log)"
    sleep 0.1
done
[ -f "$context/wheelhouse-port" ] || die "the wheelhouse server did not start in 10 s"
port="$(cat "$context/wheelhouse-port")"
wheels=(--build-arg "WHEELHOUSE_URL=http://127.0.0.1:$port/")

build core core --build-arg "BASE=$prefix/base:$tag" "${wheels[@]}"
# hub and runtime only share core: build them side by side (apt and pip wait on I/O a lot).
build hub hub --build-arg "CORE=$prefix/core:$tag" &
hub_pid=$!
build runtime runtime --build-arg "CORE=$prefix/core:$tag" "${wheels[@]}"
wait "$hub_pid" || { hub_pid=""; exit 1; }
hub_pid=""
build notebook notebook --build-arg "RUNTIME=$prefix/runtime:$tag"
build cluster cluster --build-arg "RUNTIME=$prefix/runtime:$tag"

for name in hub notebook cluster; do
    size="$("$docker" image inspect --format '{{.Size}}' "$prefix/$name:$tag")"
    say "$prefix/$name:$tag $((size / 1000000)) MB"
done
