#!/usr/bin/env bash
# Build examples/deploy/Dockerfile for real with podman on a machine that cannot pull
# python:3.11-slim (no Docker Hub), then run the image: `trialrun --version`, and the
# quickstart on the offline mock provider with a volume for runs, then `trialrun verify`.
#
#   examples/deploy/build-check.sh            # as root; needs podman, debootstrap, git
#
# What stands in for python:3.11-slim: a Debian bookworm minbase (debootstrap) with
# Debian's python3 (3.11) made into a venv at /usr/local, so that python, pip and the
# scripts pip installs are in /usr/local/bin as in the real image; this machine's extra CA
# certificates (/usr/local/share/ca-certificates, e.g. a TLS-intercepting egress proxy's)
# are added and pip is told to use the system bundle. It is tagged
# docker.io/library/python:3.11-slim in a private image store under $WORK, so the
# Dockerfile builds unchanged with --pull=never and the machine's own store is not touched.
# The build context is `git archive HEAD`: committed files only.
#
# Knobs (environment): WORK (scratch folder, default a new /tmp/trialrun-build-check.*;
# removed at the end unless KEEP=1), MIRROR (Debian mirror, default deb.debian.org),
# RUNTIME (OCI runtime; default runc when installed: crun 1.8 refuses hybrid cgroup v1/v2
# hosts), ULIMITS (podman --ulimit flags; podman's default nofile of 1048576 cannot be set
# where containers lack CAP_SYS_RESOURCE), EXTRAS (build arg, default the Dockerfile's).
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
[[ $(id -u) == 0 ]] || { echo "build-check.sh: run as root (debootstrap, rootful podman)" >&2; exit 2; }
for tool in podman debootstrap git tar; do
  command -v "$tool" >/dev/null || { echo "build-check.sh: $tool not found; install it (apt-get install $tool)" >&2; exit 2; }
done

work=${WORK:-$(mktemp -d /tmp/trialrun-build-check.XXXXXX)}
mkdir -p "$work"
mirror=${MIRROR:-http://deb.debian.org/debian}
runtime=${RUNTIME:-$(command -v runc || true)}
read -r -a ulimits <<<"${ULIMITS:---ulimit nofile=1024:4096 --ulimit nproc=4096:4096}"
pod=(podman --root "$work/storage" --runroot "$work/run")
[[ -n $runtime ]] && pod+=(--runtime "$runtime")
image=localhost/trialrun:build-check

cleanup() {
  if [[ ${KEEP:-0} == 1 ]]; then
    echo "kept: $work (podman --root $work/storage --runroot $work/run images)"
    return
  fi
  "${pod[@]}" rmi --all --force >/dev/null 2>&1 || true
  # (not `podman system reset`: it would remove the machine's podman networks as well)
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r umount 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== stand-in for python:3.11-slim: debootstrap bookworm minbase from $mirror"
start=$SECONDS
rootfs=$work/rootfs
nice -n 19 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
chroot "$rootfs" python3 -m venv /usr/local
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | nice -n 19 "${pod[@]}" import --quiet \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  - docker.io/library/python:3.11-slim >/dev/null
rm -rf "$rootfs"
echo "stand-in made in $((SECONDS - start)) s:" \
  "$("${pod[@]}" run --rm --network none "${ulimits[@]}" python:3.11-slim sh -c \
    'python --version; pip --version' | tr '\n' ' ')"

echo "== podman build -f examples/deploy/Dockerfile (context: git archive HEAD)"
mkdir "$work/context"
git archive HEAD | tar -x -C "$work/context"
build_args=()
[[ -n ${EXTRAS:-} ]] && build_args+=(--build-arg "EXTRAS=$EXTRAS")
start=$SECONDS
nice -n 19 "${pod[@]}" build --pull=never --network host "${ulimits[@]}" "${build_args[@]}" \
  -f "$work/context/examples/deploy/Dockerfile" -t "$image" "$work/context" \
  >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
build_s=$((SECONDS - start))
size=$("${pod[@]}" image inspect --format '{{.Size}}' "$image")
base=$("${pod[@]}" image inspect --format '{{.Size}}' python:3.11-slim)
echo "built $image in $build_s s: $((size / 1000000)) MB ($((base / 1000000)) MB of it the stand-in base)"

echo "== podman run $image --version"
version=$("${pod[@]}" run --rm --network none "${ulimits[@]}" "$image" --version)
echo "$version"
want=$(sed -n 's/^version = "\(.*\)"/\1/p' "$work/context/pyproject.toml")
[[ $version == "trialrun, version $want" ]] \
  || { echo "build-check.sh: expected version $want (pyproject.toml)" >&2; exit 1; }

echo "== podman run $image run examples/quickstart.yaml (mock provider, --network none)"
mkdir "$work/runs"
chown 10001:10001 "$work/runs"  # the image's user
in_container=("${pod[@]}" run --rm --network none "${ulimits[@]}"
  -v "$work/runs:/work/runs" -v "$work/context/examples:/work/examples:ro" "$image")
start=$SECONDS
"${in_container[@]}" run examples/quickstart.yaml --quiet | tail -1
echo "quickstart ran in $((SECONDS - start)) s (container start included)"
"${in_container[@]}" verify | tail -1
for run in "$work"/runs/*/; do
  echo "on the host: $run: $(wc -l <"$run/results.jsonl") records in results.jsonl," \
    "owned by uid $(stat -c %u "$run/trialrun.db")"
done
echo "build-check: ok"
