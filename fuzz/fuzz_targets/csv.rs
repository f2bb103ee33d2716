#![no_main]
//! Fuzz target: see `strata::fuzzing`.

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use strata::Format;
use strata::fuzzing::{Harness, Target};

static HARNESS: LazyLock<Harness> = LazyLock::new(|| Harness::new().expect("fuzz harness"));

fuzz_target!(|data: &[u8]| HARNESS.run(Target::File(Format::Csv), data));
