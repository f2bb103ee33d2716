//! The dashboard's browser scenarios (tests/clients/dashboard_browser.py): whether they can
//! run here, the command that runs them, and the check of what they printed.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::skip;

/// The system's Chromium and its driver, and Selenium for Python, or why the browser tests
/// cannot run (a failure under CI, which installs them).
pub fn browser_or_skip(test: &str) -> bool {
    let chromium = ["chromium", "chromedriver"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    match (chromium, selenium) {
        (true, true) => true,
        (false, _) => {
            skip::skip(
                test,
                "no chromium and chromedriver (Debian: chromium chromium-driver)",
            );
            false
        }
        (_, false) => {
            skip::skip(
                test,
                "python3 cannot import selenium (pip install selenium)",
            );
            false
        }
    }
}

/// Where the scenarios save their screenshots: `dashboard-screenshots` in Cargo's scratch
/// folder.
pub fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")
}

/// The command running the scenarios of `mode` (`local` or `cluster`) on the dashboard at
/// `url`, with `args` after it.
pub fn scenarios(mode: &str, url: &str, args: &[String]) -> Command {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/dashboard_browser.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .arg(mode)
        .arg(url.trim_end_matches('/'))
        .args(args)
        .arg(screenshots());
    command
}

/// Fail the test unless the scenarios passed and saved each of `shots` (names without
/// `.png`); show what they printed.
pub fn check(output: &Output, shots: &[&str]) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser scenarios failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{stdout}screenshots in {}", screenshots().display());
    for shot in shots {
        let png = std::fs::read(screenshots().join(format!("{shot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{shot}.png is not a PNG");
    }
}
