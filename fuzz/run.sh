#!/usr/bin/env bash
# Coverage-guided fuzzing of every input a user controls (see src/fuzzing.rs).
#
#   fuzz/run.sh [TARGET|all] [RUNS] [JOBS]
#
# TARGET is sql, catalog, parquet, csv, ndjson, ipc or avro (default: all); RUNS is the
# number of executions per target (default 1000000). Each target's corpus starts from
# the project's own SQL tests and data files. What crashes lands in fuzz/artifacts/TARGET/;
# copy it into fuzz/regressions/TARGET/ once fixed, where `cargo test` replays it.
# FUZZ_SEED fixes libFuzzer's random seed (CI uses 1, so its smoke run is repeatable);
# FUZZ_SECONDS stops each target after that many seconds, whatever RUNS says.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(sql catalog parquet csv ndjson ipc avro)
which=${1:-all}
runs=${2:-1000000}
if [[ $which != all ]]; then targets=("$which"); fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
# cargo-fuzz asks for options of a nightly compiler; the stable one accepts them this way.
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

seed() {
  local target=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  case $target in
    sql)
      # Every statement of the SQL tests, one file each.
      python3 - "$dir" <<'PY'
import hashlib, pathlib, sys
out = pathlib.Path(sys.argv[1])
for slt in sorted(pathlib.Path("sql-tests").glob("*.slt")):
    lines, sql, taking = slt.read_text().splitlines(), [], False
    for line in lines + [""]:
        if line.startswith(("query", "statement")):
            sql, taking = [], True
        elif taking and (line == "" or line == "----"):
            text = "\n".join(sql).strip()
            if text:
                name = hashlib.sha1(text.encode()).hexdigest()[:16]
                (out / name).write_text(text)
            taking = False
        elif taking:
            sql.append(line)
PY
      ;;
    catalog) cp strata.toml "$dir/"; find sql-tests/fixtures -name '*.toml' -exec cp {} "$dir/" \; ;;
    parquet) find data -name '*.parquet' | head -8 | while read -r f; do cp "$f" "$dir/$(echo "$f" | tr / _)"; done ;;
    csv) cp data/people/*.csv "$dir/"; find sql-tests/fixtures -name '*.csv' -exec cp {} "$dir/" \; ;;
    ndjson) cp data/events/*.ndjson "$dir/" ;;
    ipc) cp data/formats/*.arrow "$dir/" ;;
    avro) cp data/formats/*.avro "$dir/" ;;
  esac
  # What was found before starts the search again.
  if [[ -d fuzz/regressions/$target ]]; then cp fuzz/regressions/"$target"/* "$dir/" 2>/dev/null || true; fi
}

cargo fuzz build --sanitizer none --fuzz-dir fuzz
failed=()
for t in "${targets[@]}"; do
  seed "$t"
  extra=()
  [[ -n ${FUZZ_SEED:-} ]] && extra+=("-seed=$FUZZ_SEED")
  [[ -n ${FUZZ_SECONDS:-} ]] && extra+=("-max_total_time=$FUZZ_SECONDS")
  [[ -f fuzz/$t.dict ]] && extra+=("-dict=fuzz/$t.dict")
  echo "== fuzzing $t for $runs executions"
  status=0
  cargo fuzz run --sanitizer none --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
    -runs="$runs" -timeout=20 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
    "${extra[@]}" >"fuzz/$t.log" 2>&1 || status=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|==[0-9]+== ERROR)|panicked at" "fuzz/$t.log" || true
  if [[ $status -ne 0 ]]; then
    failed+=("$t")
    echo "!! $t failed (exit status $status); see fuzz/$t.log and fuzz/artifacts/$t/"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found problems in: ${failed[*]}"
  exit 1
fi
