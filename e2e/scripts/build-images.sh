#!/usr/bin/env bash
# Builds the container images the local real node runs (node.sh), with no registry and no
# Docker engine, and prints the folder that holds them as docker-archive tarballs:
#   sidereal:e2e                   the repository's Dockerfile, `runtime` stage, with the
#                                  binary given (BINARY=prebuilt) on the base below;
#   sidereal.local/base-cc         glibc, libgcc, CA certificates, tzdata, a nonroot user:
#                                  what gcr.io/distroless/cc-debian12:nonroot holds, made from
#                                  Debian's packages;
#   sidereal.local/postgres        the chart's trial Postgres, from Debian's packages;
#   sidereal.local/pause           the pod sandbox, from e2e/images/pause;
#   sidereal.local/probe           a TCP reachability probe (NetworkPolicy checks), e2e/images/probe.
#   build-images.sh /path/to/sidereal [image-name]
# buildah (Debian's package) builds them in a store of its own under the cache folder. The
# base images are cached, keyed by the Debian package versions they hold; the sidereal image is
# rebuilt on every call (one COPY of the binary).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=${1:?usage: build-images.sh /path/to/sidereal [image-name]}
image=${2:-sidereal:e2e}
cache=${SIDEREAL_CACHE:-$HOME/.cache/sidereal}
out="$cache/images"
mkdir -p "$out/archives" "$out/debs"
[ -x "$binary" ] || { echo "error: $binary is not an executable; build it first (cargo build --locked --bin sidereal)" >&2; exit 2; }
for tool in buildah apt-get dpkg-deb ldconfig go; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required to build the node's images (apt-get install buildah golang-go)" >&2; exit 2; }
done
bah() { buildah --root "$out/buildah/root" --runroot "$out/buildah/run" --storage-driver vfs "$@"; }

# Candidate version of each Debian package, refreshing the package lists once if apt has none.
versions() {
  if ! apt-cache show --no-all-versions libc6 >/dev/null 2>&1; then apt-get update -qq >/dev/null; fi
  local p
  for p in "$@"; do
    printf '%s=%s\n' "$p" "$(apt-cache show --no-all-versions "$p" | sed -n 's/^Version: //p' | head -1)"
  done
}

# Extracts the given packages (exact versions) into a root file system.
unpack() {
  local rootfs=$1; shift
  (cd "$out/debs" && apt-get download -qq -o APT::Sandbox::User=root "$@" >/dev/null) || {
    echo "error: apt-get download $* failed (Debian's package mirror unreachable?)" >&2; exit 2; }
  local spec deb
  for spec in "$@"; do
    local version=${spec#*=}
    deb=$(ls "$out/debs/${spec%%=*}_${version//:/%3a}_"*.deb)
    dpkg-deb -x "$deb" "$rootfs"
  done
}

# The owner package of each shared library a binary loads (ldd), as the host resolves them.
library_packages() {
  ldd "$@" | awk '/=>/ {print $3}' | sort -u | while read -r lib; do
    for f in "$lib" "${lib#/usr}" "/usr$lib" "$(readlink -f "$lib")"; do
      dpkg -S "$f" 2>/dev/null && break
    done
  done | cut -d: -f1 | sort -u
}

# Users every image knows: root, nobody, nonroot (65532, the chart's), postgres (70, the
# chart's trial Postgres, as in the official image).
write_accounts() {
  local rootfs=$1
  mkdir -p "$rootfs/etc" "$rootfs/home/nonroot" "$rootfs/tmp" "$rootfs/var/lib/postgresql" "$rootfs/var/run/postgresql"
  cat > "$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
postgres:x:70:70:postgres:/var/lib/postgresql:/sbin/nologin
EOF
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\npostgres:x:70:\n' > "$rootfs/etc/group"
  chmod 1777 "$rootfs/tmp"
  chown 65532:65532 "$rootfs/home/nonroot"
  chown 70:70 "$rootfs/var/lib/postgresql" "$rootfs/var/run/postgresql"
  # ca-certificates ships the certificates; its maintainer script would concatenate them.
  if [ -d "$rootfs/usr/share/ca-certificates" ]; then
    mkdir -p "$rootfs/etc/ssl/certs"
    find "$rootfs/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat > "$rootfs/etc/ssl/certs/ca-certificates.crt"
  fi
  ldconfig -r "$rootfs"
}

# Commits a root file system as an image and archives it. ADD of a tarball, not COPY: COPY
# would make every file root's, and the nonroot home and the postgres folders are not.
commit_rootfs() {
  local rootfs=$1 name=$2 dockerfile=$3
  local ctx="$rootfs/../ctx"; mkdir -p "$ctx"
  tar -C "$rootfs" --numeric-owner -cf "$ctx/rootfs.tar" .
  printf '%s\n' "$dockerfile" > "$ctx/Dockerfile"
  bah bud -q --layers=false --network=none --cni-config-dir "$out/buildah/cni" -t "$name" "$ctx" >/dev/null
  archive "$name"
}

archive() {
  local name=$1 file; file="$out/archives/$(echo "$1" | tr '/:' '__').tar"
  rm -f "$file"
  bah push -q "$name" "docker-archive:$file:$name" >/dev/null
}

# Builds NAME unless an archive keyed by KEY exists.
cached() {
  local name=$1 key=$2; shift 2
  local stamp; stamp="$out/archives/$(echo "$name" | tr '/:' '__').key"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -f "${stamp%.key}.tar" ]; then return; fi
  echo "building image $name" >&2
  "$@"
  echo "$key" > "$stamp"
}

base_packages=(libc6 libgcc-s1 libstdc++6 libssl3 ca-certificates tzdata netbase base-files)
build_base() {
  local work="$out/work/base"; rm -rf "$work"; mkdir -p "$work/rootfs"
  unpack "$work/rootfs" $(versions "${base_packages[@]}")
  write_accounts "$work/rootfs"
  commit_rootfs "$work/rootfs" sidereal.local/base-cc:debian12 \
    "$(printf 'FROM scratch\nADD rootfs.tar /\nUSER 65532:65532\n')"
}

pg_bin=/usr/lib/postgresql/15/bin
postgres_packages() {
  [ -x "$pg_bin/postgres" ] && [ -x "$pg_bin/pg_isready" ] || {
    echo "error: PostgreSQL 15 is not installed here (scripts/postgres.sh installs it); the image takes the same Debian packages" >&2; exit 2; }
  { printf '%s\n' "${base_packages[@]}" dash postgresql-15 postgresql-client-15 libpq5
    library_packages "$pg_bin/postgres" "$pg_bin/initdb" "$pg_bin/pg_isready"; } | sort -u
}
build_postgres() {
  local work="$out/work/postgres"; rm -rf "$work"; mkdir -p "$work/rootfs"
  unpack "$work/rootfs" $(versions $(postgres_packages))
  ln -sf dash "$work/rootfs/bin/sh"
  write_accounts "$work/rootfs"
  install -D -m 0755 "$root/e2e/images/postgres/entrypoint.sh" "$work/rootfs/usr/local/bin/docker-entrypoint.sh"
  ln -sf "$pg_bin/pg_isready" "$work/rootfs/usr/local/bin/pg_isready"
  commit_rootfs "$work/rootfs" sidereal.local/postgres:15-debian12 "$(printf '%s\n' 'FROM scratch' 'ADD rootfs.tar /' \
    'ENV PATH=/usr/local/bin:/usr/bin:/bin PGDATA=/var/lib/postgresql/data' 'USER 70:70' \
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]')"
}

build_probe() {
  local work="$out/work/probe"; rm -rf "$work"; mkdir -p "$work/rootfs"
  (cd "$root/e2e/images/probe" && CGO_ENABLED=0 GOWORK=off GOFLAGS= go build -trimpath -ldflags "-s -w" -o "$work/rootfs/probe" main.go)
  commit_rootfs "$work/rootfs" sidereal.local/probe:1 "$(printf 'FROM scratch\nADD rootfs.tar /\nUSER 65534:65534\nENTRYPOINT ["/probe"]\n')"
}

build_pause() {
  local work="$out/work/pause"; rm -rf "$work"; mkdir -p "$work/rootfs"
  (cd "$root/e2e/images/pause" && CGO_ENABLED=0 GOWORK=off GOFLAGS= go build -trimpath -ldflags "-s -w" -o "$work/rootfs/pause" main.go)
  commit_rootfs "$work/rootfs" sidereal.local/pause:1 "$(printf 'FROM scratch\nADD rootfs.tar /\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n')"
}

t0=$(date +%s)
self=$(sha256sum "$0" "$root/e2e/images/pause/main.go" "$root/e2e/images/probe/main.go" "$root/e2e/images/postgres/entrypoint.sh" | sha256sum | cut -c1-16)
cached sidereal.local/base-cc:debian12 "$self $(versions "${base_packages[@]}" | sha256sum | cut -c1-16)" build_base
cached sidereal.local/postgres:15-debian12 "$self $(versions $(postgres_packages) | sha256sum | cut -c1-16)" build_postgres
cached sidereal.local/pause:1 "$self $(go env GOVERSION)" build_pause
cached sidereal.local/probe:1 "$self $(go env GOVERSION)" build_probe

# The product image: the repository's Dockerfile, its runtime stage on the base above, the
# binary taken as built (debug info stripped: the image carries what runs, not symbols).
ctx="$out/work/sidereal"; rm -rf "$ctx"; mkdir -p "$ctx"
strip --strip-debug -o "$ctx/sidereal" "$binary"
bah rmi -f "$image" >/dev/null 2>&1 || true
bah bud -q --layers=false --network=none --cni-config-dir "$out/buildah/cni" -f "$root/Dockerfile" --target runtime \
  --build-arg BINARY=prebuilt --build-arg RUNTIME_IMAGE=sidereal.local/base-cc:debian12 \
  -t "$image" "$ctx" >/dev/null
archive "$image"
echo "images built in $(( $(date +%s) - t0 ))s: $(ls "$out/archives"/*.tar | xargs -n1 basename | tr '\n' ' ')" >&2
echo "$out/archives"
