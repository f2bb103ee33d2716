//! The `strata` command: thin entry point; everything lives in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::panic::catch_unwind(cli::main) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
        Err(panic) => {
            eprintln!("Error: {}", strata::error::panic_message(panic.as_ref()));
            ExitCode::from(101)
        }
    }
}
