#!/usr/bin/env bash
# What a fresh Debian/Ubuntu machine needs for the README's two commands, in one place:
# scripts/demo.sh and scripts/test.sh call it, and so does CI's .ci/run (so CI proves it).
#
#   scripts/setup.sh demo   build iotconnect (rdkafka: ssl + gssapi) and run the demo
#   scripts/setup.sh test   the above + what the tests use (systemd-analyze, Jackson for the Java
#                           cross-check, binutils for the portable-binary check, adduser for the .deb)
#
# As root it installs the missing Debian packages with apt-get; otherwise it prints the exact command
# and stops (exit 1). A Rust toolchain (cargo) is the one thing it does not install.
set -euo pipefail
mode="${1:-demo}"

if ! command -v cargo >/dev/null; then
  echo "setup: no Rust toolchain (cargo). Install it: https://rustup.rs (curl ... | sh), then retry." >&2
  exit 1
fi
if ! command -v dpkg >/dev/null || ! command -v apt-get >/dev/null; then
  echo "setup: not a Debian/Ubuntu system; make sure a C compiler, make, perl, pkg-config, python3 (venv)," >&2
  echo "       curl and the development files of cyrus-sasl, openssl and zlib are installed." >&2
  exit 0
fi

# Debian package => why.
pkgs=(
  gcc make perl pkg-config   # C parts of the build: librdkafka, OpenSSL (vendored), zstd, AWS-LC
  libsasl2-dev               # rdkafka `gssapi` (Kerberos for HDInsight ESP): sasl/sasl.h + libsasl2.so
  libssl-dev zlib1g-dev      # rdkafka `ssl` and zlib in the development build
  curl ca-certificates       # the demo talks to the REST API and the emulator's device API
)
if [ "$mode" = test ]; then
  pkgs+=(
    systemd                  # systemd-analyze verify of the unit, installed and in a private root
    libjackson2-databind-java  # the Java/Jackson byte-for-byte converter cross-check
    binutils                 # readelf/objdump: the portable binary's glibc and NEEDED check
    adduser                  # the .deb's maintainer scripts create the iotconnect system user
  )
fi
need=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
# Python with venv + pip for the independent clients (confluent-kafka, azure-eventhub) and the release
# tools (Zig, cargo-zigbuild from PyPI). A python3 from pyenv or elsewhere that has venv is fine.
if ! command -v python3 >/dev/null; then need+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then need+=(python3-venv)
fi

if [ ${#need[@]} -eq 0 ]; then
  echo "setup: all needed packages present" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing Debian packages: ${need[*]}" >&2
  echo "Install them, then run the command again:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
  exit 1
fi
echo "setup: apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
