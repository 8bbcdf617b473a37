#!/usr/bin/env bash
# The portable release: an x86_64 Linux binary for HDInsight 5.1 edge nodes (Ubuntu 18.04: glibc 2.27,
# OpenSSL 1.1.1) and any newer x86_64 Linux, plus a Debian package of it.
#
#   scripts/release.sh          build (or take from the cache) dist/iotconnect and dist/iotconnect_<v>_amd64.deb
#   scripts/release.sh --check  the same, then run scripts/check-portable.sh on the result
#
# How (see README "Portable release"):
# * cargo-zigbuild + Zig (both from PyPI, in a venv under ~/.cache/iotconnect) link against glibc 2.27
#   (target x86_64-unknown-linux-gnu.2.27): every C part (librdkafka, OpenSSL, zlib, zstd, AWS-LC) is
#   compiled by `zig cc` against glibc 2.27's headers and symbol versions.
# * feature `portable`: rdkafka's `ssl-vendored` (OpenSSL 3 built from source, linked statically: no
#   libssl.so at run time) and `libz-static`.
# * librdkafka: rdkafka-sys runs librdkafka's own ./configure (mklove) with the plain `CC` variable, not
#   cc-rs's per-target one. Left alone, it probes the host compiler (glibc 2.36 here), finds C11 threads
#   (thrd_create, mtx_lock: glibc >= 2.28) and the link fails. We export CC=`zig cc -target
#   x86_64-linux-gnu.2.27`, so configure's probe fails as it would on Ubuntu 18.04 and librdkafka uses its
#   bundled tinycthread (the effect of --disable-c11threads, which rdkafka-sys does not expose).
# * Kerberos/GSSAPI stays: libsasl2 is linked dynamically (libsasl2.so.2, package libsasl2-2 on Ubuntu
#   18.04). Zig's sysroot has no libsasl2, and the host's libsasl2.so.2 cannot be linked against: it needs
#   dlopen@GLIBC_2.34 (lld refuses that for a 2.27 target) and Debian versions its symbols (SASL2), which
#   Ubuntu 18.04's build may not. So the build links against a stub: a libsasl2.so with SONAME
#   libsasl2.so.2 and the same function names (from the host library's dynamic symbols) as empty,
#   unversioned functions, compiled by zig for glibc 2.27. At run time the real libsasl2.so.2 is loaded.
#   SASL2_LIB_DIR/LDFLAGS point at the stub's directory and SASL2_INCLUDE_DIR/CFLAGS at a copy of
#   /usr/include/sasl (never the whole /usr/include or /usr/lib: that would mix the host's glibc in).
# * `make libs` also links librdkafka.so.1 (unused here); lld (zig) refuses its version script naming a
#   symbol that is not built (rd_ut_coverage_check) unless given --undefined-version (GNU ld's default).
#
# Cache: the result is kept in ~/.cache/iotconnect/release/<key>, keyed by the hash of everything that
# goes into the binary (Cargo.toml, Cargo.lock, src/, this script, the tool versions), so CI rebuilds it
# only when one of them changed. The cargo target dir (RELEASE_TARGET_DIR, default
# ~/.cache/iotconnect/release-target) is kept too, so a rebuild after a source change is incremental.
# Build dependencies: gcc, make, perl (OpenSSL's Configure), libsasl2-dev (headers), binutils (nm),
# python3-venv;
# scripts/setup.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

ZIG_VERSION=0.17.0
ZIGBUILD_VERSION=0.24.0
GLIBC=2.27
TARGET=x86_64-unknown-linux-gnu
CACHE="${IOTCONNECT_CACHE:-$HOME/.cache/iotconnect}"
TOOLS="$CACHE/zig-$ZIG_VERSION-zigbuild-$ZIGBUILD_VERSION"
export CARGO_TARGET_DIR="${RELEASE_TARGET_DIR:-$CACHE/release-target}"
DIST="$ROOT/dist"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"

say() { printf '== release: %s\n' "$*" >&2; }

# The cache key: the inputs of the binary, and how it is built.
key="$( (cat Cargo.toml Cargo.lock scripts/release.sh; find src -type f | LC_ALL=C sort | xargs cat;
         [ -f build.rs ] && cat build.rs; echo "$ZIG_VERSION $ZIGBUILD_VERSION $GLIBC $(rustc --version)") |
        sha256sum | cut -c1-16)"
cached="$CACHE/release/$key"
mkdir -p "$DIST"

if [ -x "$cached/iotconnect" ]; then
  say "cached build $key (inputs unchanged): $cached/iotconnect"
else
  # The tools: Zig and cargo-zigbuild from PyPI, in their own venv.
  if [ ! -x "$TOOLS/bin/cargo-zigbuild" ]; then
    say "installing ziglang $ZIG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION (PyPI) in $TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q --disable-pip-version-check "ziglang==$ZIG_VERSION" \
      "cargo-zigbuild==$ZIGBUILD_VERSION"
  fi
  # Private sasl2 dirs: the headers, and a link-time stub of libsasl2.so.2 (see the header).
  sasl="$TOOLS/sasl2"
  syslib="$(ls /usr/lib/x86_64-linux-gnu/libsasl2.so.2 /usr/lib64/libsasl2.so.2 2>/dev/null | head -1 || true)"
  [ -n "$syslib" ] || { echo "libsasl2.so.2 not found (package libsasl2-2)" >&2; exit 1; }
  [ -f /usr/include/sasl/sasl.h ] || { echo "/usr/include/sasl/sasl.h not found (package libsasl2-dev; scripts/setup.sh installs it)" >&2; exit 1; }
  rm -rf "$sasl"; mkdir -p "$sasl/lib" "$sasl/include"
  cp -r /usr/include/sasl "$sasl/include/"
  nm -D --defined-only "$syslib" | awk '$2 == "T" { sub(/@.*/, "", $3); print "void " $3 "(void) {}" }' >"$sasl/stub.c"
  grep -q 'void sasl_client_new(void)' "$sasl/stub.c" || { echo "no sasl_client_new in $syslib" >&2; exit 1; }
  "$TOOLS/bin/python" -m ziglang cc -target "x86_64-linux-gnu.$GLIBC" -shared -fPIC \
    -Wl,-soname,libsasl2.so.2 -o "$sasl/lib/libsasl2.so" "$sasl/stub.c"
  # The C compiler for librdkafka's ./configure and make (see the header).
  cat >"$TOOLS/zcc" <<EOF
#!/bin/sh
exec "$TOOLS/bin/python" -m ziglang cc -target x86_64-linux-gnu.$GLIBC "\$@"
EOF
  chmod +x "$TOOLS/zcc"

  say "building iotconnect for $TARGET.$GLIBC (cold: ~17 min of CPU, ~10 min on 2 idle cores) into $CARGO_TARGET_DIR"
  t0=$SECONDS
  PATH="$TOOLS/bin:$PATH" \
  CC="$TOOLS/zcc" \
  CFLAGS="-I$sasl/include" \
  LDFLAGS="-L$sasl/lib -Wl,--undefined-version" \
  SASL2_LIB_DIR="$sasl/lib" SASL2_INCLUDE_DIR="$sasl/include" \
    nice -n "${RELEASE_NICE:-10}" "$TOOLS/bin/cargo-zigbuild" zigbuild --release --locked \
      --target "$TARGET.$GLIBC" --features portable --bin iotconnect
  say "built in $((SECONDS - t0)) s"
  mkdir -p "$cached.tmp"
  cp "$CARGO_TARGET_DIR/$TARGET/release/iotconnect" "$cached.tmp/iotconnect"
  rm -rf "$cached"; mv "$cached.tmp" "$cached"
fi

install -m 0755 "$cached/iotconnect" "$DIST/iotconnect"
say "binary: $DIST/iotconnect ($(stat -c %s "$DIST/iotconnect") bytes)"
scripts/package-deb.sh "$DIST/iotconnect" "$DIST" >/dev/null
say "package: $DIST/iotconnect_${VERSION}_amd64.deb"
if [ "${1:-}" = --check ]; then
  scripts/check-portable.sh "$DIST/iotconnect"
fi
echo "$DIST/iotconnect"
