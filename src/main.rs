//! The `strata` command: thin entry point; everything lives in the library.

mod cli;

use std::process::ExitCode;

/// mimalloc keeps the memory a query frees for the next one; glibc's allocator hands large
/// blocks back to the system and faults them in again (TPC-H q14 at SF1 took 390 K page faults
/// and a third of its time in the kernel).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
