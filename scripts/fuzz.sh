#!/usr/bin/env bash
# Runs the cargo fuzz targets (fuzz/: the gateway's frame parser and cursor
# decoder) for a short while each; a crash fails the run and leaves its input
# in fuzz/artifacts/<target>/ (replay it with `cargo fuzz run <target> <file>`).
#
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS (25) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh frame_parse
#
# cargo-fuzz 0.13.2 is installed from crates.io into .tools/cargo on first use.
# Stable Rust is enough (no sanitizer: `-s none`); nightly is used only when
# the stable build fails. Built unoptimised (`--dev`): the first build takes
# half the time of an optimised one, and a short run needs no more speed. libFuzzer needs a C++ compiler. Outside CI a missing
# toolchain or compiler skips the run with a message; with CI=true it fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

CARGO_FUZZ_VERSION="0.13.2"
seconds="${FUZZ_SECONDS:-25}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_parse cursor_decode)
# Outside the workspace's target folder's own builds, but kept with it (CI
# keeps that folder between runs), so a run after the first builds little.
fuzz_target_dir="${CARGO_TARGET_DIR:-$root/target}/fuzz"

in_ci() { case "${CI:-}" in ""|0|false) return 1 ;; *) return 0 ;; esac; }
unable() {
  if in_ci; then
    echo "fuzz: $1" >&2
    exit 1
  fi
  echo "fuzz: skipped: $1"
  exit 0
}

command -v c++ >/dev/null 2>&1 || unable "no C++ compiler (c++) for libFuzzer; install one (e.g. apt-get install g++)"

cargo_fuzz="$root/.tools/cargo/bin/cargo-fuzz"
if ! { [ -x "$cargo_fuzz" ] && "$cargo_fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; }; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/cargo"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$root/.tools/cargo" --quiet \
    || unable "cannot install cargo-fuzz $CARGO_FUZZ_VERSION"
fi
export PATH="$root/.tools/cargo/bin:$PATH"

cd fuzz
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# rustup's stable, then its nightly; without rustup, whatever cargo is installed
# (the toolchain argument stays unquoted: empty means none).
if command -v rustup >/dev/null 2>&1; then candidates=(+stable +nightly); else candidates=(""); fi
toolchain=none
for candidate in "${candidates[@]}"; do
  [ -z "$candidate" ] || rustup run "${candidate#+}" rustc --version >/dev/null 2>&1 || continue
  echo "fuzz: building the targets with ${candidate:-the installed} Rust"
  if cargo $candidate fuzz build --dev -s none --target-dir "$fuzz_target_dir" >"$log" 2>&1; then
    toolchain="$candidate"
    break
  fi
  tail -n 20 "$log"
done
[ "$toolchain" != none ] || unable "the fuzz targets build with neither stable nor nightly Rust"

for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s"
  # -max_total_time bounds the run; a crash, an input taking over 10 s or a
  # process over 1 GiB stops it with a failure.
  if ! cargo $toolchain fuzz run --dev -s none --target-dir "$fuzz_target_dir" "$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
done
echo "fuzz: ${#targets[@]} passed, 0 failed"
