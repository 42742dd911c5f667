#!/usr/bin/env bash
# Sets up delayopt on Debian 12 and builds it: installs missing apt packages, builds Kokkos once
# into a cache prefix (unless Kokkos_ROOT points at your own), configures and builds a CMake preset.
# Idempotent: a second run only rebuilds what changed; runs started together take turns (flock), and
# a Kokkos install that was interrupted is redone.
#
# Environment:
#   Kokkos_ROOT       use this Kokkos install (3.4 .. 5.x) instead of building one
#   DELAYOPT_PRESET   CMake configure preset (default: default)
#   XDG_CACHE_HOME    cache root (default ~/.cache); Kokkos goes to $XDG_CACHE_HOME/delayopt
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
preset=${DELAYOPT_PRESET:-default}
home=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}  # CI may run without HOME
cache=${XDG_CACHE_HOME:-$home/.cache}/delayopt
kokkos_version=3.4.01  # the Kokkos inside Debian 12's trilinos source package
kokkos_prefix=$cache/kokkos-$kokkos_version
jobs=$(nproc)

log() { printf '[delayopt setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_get() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }

# ---- apt packages -------------------------------------------------------------------------------
packages=(cmake ninja-build g++ libeigen3-dev catch2 libbenchmark-dev libcli11-dev nlohmann-json3-dev python3 libopenmpi-dev openmpi-bin python3-sklearn fortunes-min gnuplot-nox python3-torch)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---- Kokkos ---------------------------------------------------------------------------------------
build_kokkos() {
  local work=$cache/kokkos-src
  rm -rf "$work" && mkdir -p "$work/lists/partial"
  # A private deb-src list and state directory: the system's apt sources stay untouched. The mirror
  # is the one the system already uses.
  local uri suite
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb" && $3 !~ /security|updates/ {print $2; exit}' /etc/apt/sources.list)
  suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
  echo "deb-src $uri $suite main" >"$work/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
  log "downloading Debian's trilinos source package (~166 MB) for Kokkos $kokkos_version"
  apt-get "${opts[@]}" update -qq
  (cd "$work" && apt-get "${opts[@]}" source --download-only -qq trilinos)
  tar -xzf "$work"/trilinos_*.orig.tar.gz -C "$work" --wildcards '*/packages/kokkos/*'
  local src
  src=$(echo "$work"/*/packages/kokkos)
  grep -q "set(Kokkos_VERSION_MINOR 4)" "$src/CMakeLists.txt" || { log "unexpected Kokkos version in $src"; exit 1; }
  log "building Kokkos $kokkos_version (OpenMP + Serial, C++20) into $kokkos_prefix"
  cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=20 \
    -DKokkos_CXX_STANDARD=20 -DKokkos_ENABLE_OPENMP=ON -DKokkos_ENABLE_SERIAL=ON -DKokkos_ENABLE_TESTS=OFF \
    -DCMAKE_INSTALL_PREFIX="$kokkos_prefix" >"$work/configure.log"
  cmake --build "$work/build" -j "$jobs" >"$work/build.log" 2>&1 || { tail -50 "$work/build.log"; exit 1; }
  rm -rf "$kokkos_prefix"  # what an interrupted install left
  cmake --install "$work/build" >/dev/null
  rm -rf "$work"  # last: its absence marks the install complete (kokkos_ready)
}
kokkos_ready() { [ -f "$kokkos_prefix/lib/cmake/Kokkos/KokkosConfig.cmake" ] && [ ! -e "$cache/kokkos-src" ]; }

if [ -n "${Kokkos_ROOT:-}" ]; then
  log "using Kokkos from Kokkos_ROOT=$Kokkos_ROOT"
  kokkos_root=$Kokkos_ROOT
else
  # One Kokkos build at a time per cache (say the demo and the tests were started together).
  mkdir -p "$cache"
  exec 8>"$cache/kokkos.lock"
  flock 8
  if ! kokkos_ready; then build_kokkos; fi
  flock -u 8
  kokkos_root=$kokkos_prefix
fi

# ---- configure and build --------------------------------------------------------------------------
build_dir=$root/build/$preset
mkdir -p "$build_dir"
exec 9>"$build_dir/.setup.lock"  # one configure and build at a time per build folder
flock 9
if [ ! -f "$build_dir/CMakeCache.txt" ] || ! grep -q "^Kokkos_ROOT:.*=$kokkos_root\$" "$build_dir/CMakeCache.txt"; then
  log "configuring preset '$preset' in $build_dir"
  cmake --preset "$preset" -S "$root" -DKokkos_ROOT="$kokkos_root" >/dev/null
fi
log "building"
cmake --build "$build_dir" -j "$jobs"
