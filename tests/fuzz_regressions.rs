//! Inputs the fuzz targets found (`fuzz/regressions/TARGET/`), and the fuzzers' starting
//! points, replayed through the same harness: each gives an answer or an error, never a
//! panic (caught or not).

use std::path::{Path, PathBuf};

use strata::fuzzing::{Harness, Target};

#[path = "common/panicking.rs"]
mod panicking;
use panicking::register_panicking_function;

/// The harness watches panics process-wide: its tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

#[test]
fn fuzz_regressions_answer_or_fail_cleanly() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let harness = Harness::new().expect("harness");
    let mut replayed = 0;
    for (name, target) in Target::ALL {
        for path in files(&root.join("fuzz/regressions").join(name)) {
            let bytes = std::fs::read(&path).expect("read");
            eprintln!("replaying {}", path.display());
            harness.run(target, &bytes);
            // A malformed file fails with one line that names it.
            if let Target::File(format) = target {
                for outcome in harness.read_file(format, &bytes) {
                    if let Err(e) = outcome {
                        let message = e.to_string();
                        assert!(!message.contains('\n'), "{}: {message}", path.display());
                        assert!(message.contains("input-"), "{}: {message}", path.display());
                    }
                }
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no regression inputs found");
}

#[test]
fn harness_reports_a_caught_panic() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The engine turns a panic inside a query into an error; the harness must still see it,
    // or the fuzzers would miss every panic the engine survives.
    let harness = Harness::new().expect("harness");
    register_panicking_function(harness.engine());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        harness.run(Target::Sql, b"SELECT boom(a) FROM t");
    }));
    assert!(caught.is_err(), "a caught panic went unnoticed");
    // A clean input passes.
    harness.run(Target::Sql, b"SELECT a, count(*) FROM t GROUP BY a");
}
