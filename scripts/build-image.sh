#!/usr/bin/env bash
# Build the nasrl image on a machine that reaches no container registry: Debian's buildah (chroot
# isolation, vfs storage: no daemon, no overlay mounts, no user namespaces needed) from a base image
# made here with debootstrap. Real users with a registry just run `docker build .` (python:3.11-slim).
#
#   bash scripts/build-image.sh                        localhost/nasrl:cpu (CPU torch)
#   bash scripts/build-image.sh --variant cu128        CUDA torch from the PyTorch index, tag :cu128
#   bash scripts/build-image.sh --tag my/nasrl:dev     another tag
#   bash scripts/build-image.sh --rebuild-base         make the debootstrap base again
#
# The base (localhost/nasrl-base) is made once and reused; so is the deps image (torch and the
# dependencies) until pyproject.toml or the Dockerfile change; an image whose sources did not change is
# not built again. A torch wheel of the requested variant found
# in pip's find-links folders (/opt/wheels here) is copied into build/image/wheels/ (ignored by git) so
# the build needs no PyTorch index; the rest comes from PyPI. Run as root (buildah's vfs storage lives
# in /var/lib/containers). Then:  buildah --storage-driver vfs run localhost/nasrl:cpu -- nasrl --help
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cpu
tag=""
rebuild_base=0
torch_version=2.13.0
base_image=localhost/nasrl-base
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) variant="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --rebuild-base) rebuild_base=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument $1 (allowed: --variant, --tag, --rebuild-base)" >&2; exit 2 ;;
  esac
done
tag="${tag:-localhost/nasrl:$variant}"
bah=(buildah --storage-driver vfs)

need() {  # install a Debian package when its command is missing (root only)
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" -ne 0 ]; then echo "build-image: $1 is missing (apt-get install $2)" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need buildah buildah
need debootstrap debootstrap

# -- the base: a minimal Debian bookworm, from the mirror apt already uses -----------------------
mirror_of_apt() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -m1 '/debian/\?$' || true)
  [ -n "$uri" ] || uri=$(grep -hsE '^deb +[^ ]+/debian/? ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

if [ "$rebuild_base" -eq 1 ] || ! "${bah[@]}" inspect --type image "$base_image" >/dev/null 2>&1; then
  mirror=$(mirror_of_apt)
  rootfs=$(mktemp -d /var/tmp/nasrl-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-image: debootstrap bookworm from $mirror"
  start=$(date +%s)
  # minbase: dpkg, apt and the essential set only; Python is the Dockerfile's to add, as on any bare base.
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/var/tmp/nasrl-debootstrap.log 2>&1 \
    || { tail -20 /var/tmp/nasrl-debootstrap.log >&2; exit 1; }
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian*}/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  ctr=$("${bah[@]}" from scratch)
  mnt=$("${bah[@]}" mount "$ctr")
  tar -C "$rootfs" -cf - . | tar -C "$mnt" -xpf - --numeric-owner
  "${bah[@]}" umount "$ctr" >/dev/null
  "${bah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash --os linux --arch amd64 "$ctr"
  "${bah[@]}" commit --quiet --rm "$ctr" "$base_image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "build-image: $base_image made in $(( $(date +%s) - start )) s"
fi

# -- a local torch wheel, when there is one -------------------------------------------------------
wheels=build/image/wheels
mkdir -p "$wheels"
find "$wheels" -name 'torch-*.whl' ! -name "torch-${torch_version}+${variant}-*" -delete
index_url="https://download.pytorch.org/whl/$variant"
links=$(python3 -m pip config list 2>/dev/null | sed -nE "s/^.*find-links='([^']*)'.*/\1/p" | tr ' ' '\n')
for dir in ${PIP_FIND_LINKS:-} $links /opt/wheels; do
  [ -d "$dir" ] || continue
  wheel=$(find "$dir" -maxdepth 1 -name "torch-${torch_version}+${variant}-cp311-*.whl" | head -1)
  if [ -n "$wheel" ]; then
    [ -e "$wheels/$(basename "$wheel")" ] || ln "$wheel" "$wheels/" 2>/dev/null || cp "$wheel" "$wheels/"
    index_url=""  # no PyTorch index needed (and none is reachable on a registry-less machine)
    break
  fi
done

# -- pip's CA bundle (a TLS-intercepting proxy's CA lives there), handed to the build as a secret ------
cert="${PIP_CERT:-$(python3 -m pip config list 2>/dev/null | sed -nE "s/^global\.cert='([^']*)'.*/\1/p" | head -1)}"
[ -s "$cert" ] || cert=/etc/ssl/certs/ca-certificates.crt
secret=()
[ -s "$cert" ] && secret=(--secret "id=pip-cert,src=$cert")

# -- the image: deps (torch and every dependency) once per pyproject.toml, then the code -----------------
# No --layers: with the vfs driver every cached layer is a full copy of the tree (a 1.6 GB image left
# 20 GB of cache). Instead the deps stage is an image of its own, tagged with a hash of what it is made
# of, and the final image carries a hash of its sources: an unchanged tree builds nothing.
base_id=$("${bah[@]}" inspect --type image --format '{{.FromImageID}}' "$base_image")
deps_key=$( { echo "$base_id $torch_version $variant $index_url"; cat Dockerfile pyproject.toml; } | sha256sum | cut -c1-12)
deps_image="localhost/nasrl-deps:$variant-$deps_key"
source_key=$( { echo "$deps_key"; find README.md controller components pipelines -type f ! -path '*/__pycache__/*' \
  ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-12)
label() { "${bah[@]}" inspect --type image --format "{{index .OCIv1.Config.Labels \"$1\"}}" "$tag" 2>/dev/null || true; }
if [ "$(label dev.nasrl.source)" = "$source_key" ]; then
  echo "build-image: $tag is up to date (sources $source_key)"
  exit 0
fi
build=("${bah[@]}" build --isolation chroot --layers=false --force-rm "${secret[@]}"
  --build-arg BASE_IMAGE="$base_image" --build-arg TORCH_VERSION="$torch_version"
  --build-arg TORCH_VARIANT="$variant" --build-arg TORCH_INDEX_URL="$index_url")
start=$(date +%s)
if ! "${bah[@]}" inspect --type image "$deps_image" >/dev/null 2>&1; then
  echo "build-image: building $deps_image (torch ${torch_version}+${variant}${index_url:+ from $index_url})"
  "${build[@]}" -f Dockerfile --target deps -t "$deps_image" .
  for old in $("${bah[@]}" images --format '{{.Name}}:{{.Tag}}' | grep "^localhost/nasrl-deps:$variant-" | grep -v "$deps_key"); do
    "${bah[@]}" rmi "$old" >/dev/null || true
  done
  echo "build-image: $deps_image built in $(( $(date +%s) - start )) s"
fi
echo "build-image: building $tag"
# The same Dockerfile with its build stage on the deps image instead of the deps stage (then unused).
mkdir -p build/image
sed "s|^FROM deps AS build\$|FROM $deps_image AS build|" Dockerfile >build/image/Dockerfile.code
grep -q "^FROM $deps_image AS build\$" build/image/Dockerfile.code \
  || { echo "build-image: the Dockerfile has no line 'FROM deps AS build'" >&2; exit 1; }
"${build[@]}" -f build/image/Dockerfile.code --label "dev.nasrl.source=$source_key" -t "$tag" .
"${bah[@]}" rmi --prune >/dev/null 2>&1 || true  # the previous build of $tag, now untagged
echo "build-image: $tag built in $(( $(date +%s) - start )) s; $("${bah[@]}" images --format '{{.Size}}' "$tag" | head -1)"
