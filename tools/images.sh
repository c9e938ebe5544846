#!/usr/bin/env bash
# make images: the three function images (submit, generate, relay) from the one Containerfile.
# Prints the image names, one a line, on stdout; progress goes to stderr.
#
# 1. The binaries, once for all three: a static release build (glibc crt-static) for
#    x86_64-unknown-linux-gnu in target/x86_64-unknown-linux-gnu/release, which cargo reuses
#    while the sources do not change.
# 2. A build context with just those binaries and Debian's CA bundle (target/images/context).
# 3. One image per function, FUNCTION as a build argument, with the engine found here:
#    ENGINE=docker|podman|cloudbuild, or Docker when its daemon answers, else podman (installed
#    with apt-get when missing, with runc; the vfs storage driver, which works everywhere).
#
# IMAGE_REGISTRY (default localhost) and IMAGE_TAG (default latest) name the images
# REGISTRY/assetgen-FUNCTION:TAG; PUSH=1 pushes them (make deploy does).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=x86_64-unknown-linux-gnu
functions=(submit generate relay)
registry="${IMAGE_REGISTRY:-localhost}"
tag="${IMAGE_TAG:-latest}"
context="$root/target/images/context"
sudo=""
[[ "$(id -u)" == 0 ]] || sudo=sudo

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y "$@" >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y "$@" >&2; }
}

engine="${ENGINE:-}"
if [[ -z "$engine" ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker
  else
    engine=podman
  fi
fi
case "$engine" in
  podman)
    if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
      echo "installing podman and runc (Debian packages) to build the images" >&2
      apt_install podman runc
    fi
    container=(podman "--storage-driver=${PODMAN_STORAGE_DRIVER:-vfs}")
    ;;
  docker) container=(docker) ;;
  cloudbuild) command -v gcloud >/dev/null || { echo "ENGINE=cloudbuild needs gcloud" >&2; exit 1; } ;;
  *) echo "ENGINE is docker, podman or cloudbuild, not $engine" >&2; exit 1 ;;
esac

# 1. The binaries. The flag goes through the target's own RUSTFLAGS so that build scripts and
# proc macros (built for the host) stay dynamically linked.
echo "building the static release binaries (target/$target/release)" >&2
bins=()
for f in "${functions[@]}"; do bins+=(--bin "assetgen-$f"); done
cd "$root" # the workspace, whatever directory this was started from (cargo test starts in tests/)
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  "${CARGO:-cargo}" build --release --locked --target "$target" "${bins[@]}" >&2

# 2. The context.
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || apt_install ca-certificates
rm -rf "$context"
mkdir -p "$context"
cp /etc/ssl/certs/ca-certificates.crt "$context/"
for f in "${functions[@]}"; do
  bin="$root/target/$target/release/assetgen-$f"
  # A static(-pie) binary lists no shared objects ("statically linked").
  if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "$bin is dynamically linked; a FROM scratch image cannot run it" >&2
    exit 1
  fi
  cp "$bin" "$context/"
done

# 3. The images.
names=()
for f in "${functions[@]}"; do names+=("$registry/assetgen-$f:$tag"); done
if [[ "$engine" == cloudbuild ]]; then
  cp "$root/Containerfile" "$context/"
  {
    echo "steps:"
    for i in "${!functions[@]}"; do
      echo "- name: gcr.io/cloud-builders/docker"
      echo "  args: [build, -f, Containerfile, --build-arg, FUNCTION=${functions[$i]}, -t, '${names[$i]}', .]"
    done
    echo "images:"
    for n in "${names[@]}"; do echo "- '$n'"; done
  } >"$context/cloudbuild.yaml"
  # Cloud Build pushes what `images:` lists.
  gcloud builds submit "$context" --config "$context/cloudbuild.yaml" >&2
else
  for i in "${!functions[@]}"; do
    echo "building ${names[$i]} with $engine" >&2
    "${container[@]}" build -f "$root/Containerfile" --build-arg "FUNCTION=${functions[$i]}" -t "${names[$i]}" "$context" >&2
    [[ "${PUSH:-}" != 1 ]] || "${container[@]}" push "${names[$i]}" >&2
  done
fi
printf '%s\n' "${names[@]}"
