#!/usr/bin/env bash
# Build every image docker-compose.yml needs with no container registry:
#
#   docker/build_offline_images.sh
#   docker-compose -f docker-compose.yml -f docker-compose.offline.yml --profile monolith up -d
#
#   local/debian:bookworm   docker/make_base_image.sh (debootstrap from the host's apt mirror;
#                           kept while its inputs do not change)
#   local/python:3.11       docker/offline/python.Dockerfile
#   local/postgres:15       docker/offline/postgres.Dockerfile   (for postgres:15.x-alpine)
#   local/redis:7.0         docker/offline/redis.Dockerfile      (for redis:7.0.x-alpine)
#   local/moto:VERSION      docker/offline/moto.Dockerfile       (for motoserver/moto:VERSION: the
#                           app image's moto[server], the version requirements.txt pins)
#   local/nginx:1.22        docker/offline/nginx.Dockerfile      (the front door's proxy)
#   $LEAGUE_IMAGE           ./Dockerfile with BASE_IMAGE=local/python:3.11
#
# pip in the builds uses this host's pip configuration (its http(s) index URLs and trusted
# hosts, read with `pip config list`) and the system certificate bundle, which trusts the
# host's extra CA certificates. The configuration lives in build stages only. Prints each
# image's size; exits non-zero with the build's last lines when one fails.
#
#   docker/build_offline_images.sh --app CONTEXT TAG
#
# builds only the League Manager image, from the directory CONTEXT (e.g. an earlier release
# out of `git archive`), on the same base and pip configuration: its dependencies' layer is
# shared with the other app images whose requirements.txt is the same.
set -euo pipefail
app_context=""
if [ "${1:-}" = "--app" ]; then
    app_context="$(cd "${2:?--app CONTEXT TAG}" && pwd)"; app_tag="${3:?--app CONTEXT TAG}"
fi
cd "$(dirname "$0")/.."
export DOCKER_BUILDKIT=0   # the classic builder: the same on Debian's engine and newer ones

league_image="${LEAGUE_IMAGE:-league-manager:latest}"
moto_version="$(sed -n 's/^moto\[server\]==\([^ ;#]*\).*/\1/p' requirements.txt)"
[ -n "$moto_version" ] || { echo "build_offline_images: no moto[server]==X pin in requirements.txt" >&2; exit 1; }

pip_conf="$(python3 - <<'PY'
import shutil, subprocess, sys
pip = [sys.executable, "-m", "pip"] if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0 else [shutil.which("pip") or "pip"]
out = subprocess.run([*pip, "config", "list"], capture_output=True, text=True).stdout
values = {}
for line in out.splitlines():
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    if name in ("index-url", "extra-index-url", "trusted-host"):
        values.setdefault(name, []).extend(value.strip().strip("'\"").split())
lines = ["[global]", "cert = /etc/ssl/certs/ca-certificates.crt"]
for name in ("index-url", "extra-index-url", "trusted-host"):
    # Only what a build container can reach: file:// indexes are this host's disk.
    kept = [v for v in values.get(name, []) if name == "trusted-host" or v.startswith(("http://", "https://"))]
    if name == "index-url":
        kept = kept[:1]
    if kept:
        lines.append(f"{name} = {' '.join(kept)}")
print("\n".join(lines))
PY
)"

docker/make_base_image.sh local/debian:bookworm

logs="$(mktemp -d /tmp/league-build.XXXXXX)"
trap 'rm -rf "$logs"' EXIT
build() {  # build NAME TAG ARGS... : one image, its log kept for a failure
  local name="$1" tag="$2" started=$SECONDS
  shift 2
  if docker build -q -t "$tag" "$@" >"$logs/$name.log" 2>&1; then
    echo "build: $tag in $((SECONDS - started)) s"
  else
    echo "build: $tag FAILED; last lines:" >&2
    tail -25 "$logs/$name.log" >&2
    return 1
  fi
}

build python local/python:3.11 -f docker/offline/python.Dockerfile docker/offline
if [ -n "$app_context" ]; then
    build app "$app_tag" --build-arg BASE_IMAGE=local/python:3.11 --build-arg PIP_CONF="$pip_conf" "$app_context"
    docker image inspect -f '{{.Size}}' "$app_tag" | awk -v t="$app_tag" '{printf "  %-28s %5.0f MB\n", t, $1/1e6}'
    exit 0
fi
# Postgres, Redis and nginx only need the base; the app image needs local/python. Two at a
# time at most on a small machine: the app (the long pip install) beside the three apt ones.
wait_all() { local rc=0 pid; for pid in "${pids[@]}"; do wait "$pid" || rc=1; done; pids=(); return $rc; }
pids=()
build app "$league_image" --build-arg BASE_IMAGE=local/python:3.11 --build-arg PIP_CONF="$pip_conf" . & pids+=($!)
{
  build postgres local/postgres:15 -f docker/offline/postgres.Dockerfile docker/offline \
    && build redis local/redis:7.0 -f docker/offline/redis.Dockerfile docker/offline \
    && build nginx local/nginx:1.22 -f docker/offline/nginx.Dockerfile docker/offline
} & pids+=($!)
wait_all
build moto "local/moto:$moto_version" --build-arg APP_IMAGE="$league_image" -f docker/offline/moto.Dockerfile docker/offline

echo "images:"
for tag in local/debian:bookworm local/python:3.11 local/postgres:15 local/redis:7.0 "local/moto:$moto_version" \
  local/nginx:1.22 "$league_image"; do
  docker image inspect -f '{{.Size}}' "$tag" | awk -v t="$tag" '{printf "  %-28s %5.0f MB\n", t, $1/1e6}'
done
