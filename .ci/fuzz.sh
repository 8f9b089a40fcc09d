#!/usr/bin/env bash
# Runs every fuzz target of the module for a short, bounded time each, and fails if any finds a
# crash. Targets are found with grep ("func FuzzX(" in *_test.go files), so a new target runs
# without editing this script. The seed corpora (f.Add and testdata/fuzz/FuzzX/) run first.
#
#   FUZZTIME=10s bash .ci/fuzz.sh      # per target (default 10s); e.g. FUZZTIME=1s for a smoke run
#   FUZZ_MATCH=spa bash .ci/fuzz.sh    # only targets whose "dir name" matches this extended regexp
#
# A crashing input is written by go test to the package's testdata/fuzz/FuzzX/: commit it with
# the fix, and it stays in the corpus as a regression test.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
export CGO_ENABLED=0
fuzztime=${FUZZTIME:-10s}

# "dir name" pairs, one per target, sorted.
mapfile -t targets < <(
  grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' --exclude-dir=.git --exclude-dir=third_party . |
    sed -E 's#^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#\1 \2#' | sort -u |
    grep -E -- "${FUZZ_MATCH:-.}"
)
if ((${#targets[@]} == 0)); then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, $fuzztime each"
failed=()
passed=0
start=$SECONDS
for t in "${targets[@]}"; do
  read -r dir name <<<"$t"
  # -run '^$': no unit tests; the target's seed corpus runs before fuzzing starts.
  # -parallel 2: the machine has 2 cores. timeout: a hung target fails, never stalls CI.
  if out=$(timeout 300 go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel 2 "./$dir" 2>&1); then
    passed=$((passed + 1))
    echo "ok   $dir $name"
  else
    failed+=("$dir $name")
    echo "FAIL $dir $name"
    printf '%s\n' "$out" | tail -n 30
  fi
done
echo "fuzz: $((SECONDS - start))s"
echo "fuzz: ${passed} passed, ${#failed[@]} failed"
if ((${#failed[@]})); then
  printf 'fuzz: crash or failure in %s\n' "${failed[@]}" >&2
  exit 1
fi
