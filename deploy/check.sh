#!/usr/bin/env bash
# Validate deploy/ with what this machine has:
# 1. always: the structure of the compose file, the Helm chart's templates (read as YAML
#    with their {{ }} expressions as placeholders: Helm itself is not installed here, so
#    nothing is rendered by Helm) and the Containerfile (deploy/check_manifests.py);
# 2. with --build: the image, built by Buildah (Debian's package, chroot isolation)
#    from deploy/Containerfile. There is no Docker Hub here, so the base is a Debian
#    bookworm made by debootstrap into a Buildah scratch container (RAYDECK_BASE_IMAGE
#    names another). Then: the image runs as a non-root user, has no compiler, and its
#    Python loads the production settings' apps.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"

"$PYTHON" deploy/check_manifests.py

[ "${1:-}" = "--build" ] || { echo "image: not built (pass --build)"; exit 0; }
command -v buildah >/dev/null || { echo "image: cannot build, buildah is not installed"; exit 1; }

base="${RAYDECK_BASE_IMAGE:-localhost/raydeck-debian-bookworm}"
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    echo "image: no base image $base and no debootstrap to make one (apt-get install debootstrap)"
    exit 1
  }
  echo "image: making $base with debootstrap"
  scratch=$(buildah from scratch)
  root=$(buildah mount "$scratch")
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
  buildah umount "$scratch" >/dev/null
  buildah commit --quiet --rm "$scratch" "$base" >/dev/null
fi

tag=localhost/raydeck:check
ca_args=()
ca="${RAYDECK_BUILD_CA:-${PIP_CERT:-}}"  # behind a TLS-inspecting proxy: its CA for pip
if [ -n "$ca" ] && [ -f "$ca" ]; then
  ca_args=(--volume "$ca:/run/build-ca.crt:ro" --build-arg BUILD_CA=/run/build-ca.crt)
fi
buildah bud --isolation chroot --layers --build-arg "BASE=$base" "${ca_args[@]}" \
  -f deploy/Containerfile -t "$tag" .
user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$tag")
[ -n "$user" ] && [ "$user" != "0" ] && [ "$user" != "root" ] || { echo "image: runs as root"; exit 1; }
ctr=$(buildah from "$tag")
trap 'buildah rm "$ctr" >/dev/null' EXIT
# Asked so that the answer is printed, not an exit status (buildah reports a command's
# non-zero exit as an error line, which read like a failed check).
compiler=$(buildah run --isolation chroot "$ctr" -- sh -c 'command -v gcc || command -v cc || echo none')
if [ "$compiler" != "none" ]; then
  echo "image: a compiler is in the final stage ($compiler)"; exit 1
fi
buildah run --isolation chroot --env DJANGO_SECRET_KEY=check --env ALLOWED_HOSTS=check \
  --env DATABASE_URL=postgres://check/none --env REDIS_URL=redis://check "$ctr" -- \
  python3 -c 'import django; django.setup(); from django.apps import apps; print("image: loads", len(apps.get_app_configs()), "apps")'
echo "image: $tag built, runs as user $user, no compiler"
