//! Tests that cannot run here say so where the run's output shows it, and fail under CI.

use std::io::Write;

/// Report that `test` skipped because of `reason`: a `SKIPPED` line written straight to
/// standard error (the test harness captures only `print!`), and added to
/// `skipped-tests.txt` in Cargo's scratch folder, which `.ci/run` prints at the end. Under
/// CI (`CI` set), where every test server is installed, a skip is a failure.
pub fn skip(test: &str, reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} cannot run: {reason} (CI installs what it needs, so this is a failure)"
    );
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    let list = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
