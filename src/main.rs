//! The `strata` command: thin entry point; everything lives in the library.

mod cli;

use std::process::ExitCode;

/// mimalloc keeps the memory a query frees for the next one; glibc's allocator hands large
/// blocks back to the system and faults them in again (TPC-H q14 at SF1 took 390 K page faults
/// and a third of its time in the kernel).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    cpu::stop_unless_it_has_the_build_target();
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

/// The CPU check of a build for x86-64-v3 (`.cargo/config.toml`): it runs before any code that
/// may use those instructions, and tests one bit at a time so that it needs none of them itself.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
mod cpu {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    use std::io::Write;

    /// Exits with a one-line error on a CPU this build cannot run on. Nothing after it runs
    /// there: even a function's return may use an AVX instruction (`vzeroupper`).
    #[inline(never)]
    pub fn stop_unless_it_has_the_build_target() {
        if !has_the_build_target() {
            let _ = std::io::stderr().write_all(
                b"Error: this strata was built for x86-64-v3 CPUs (AVX2, BMI2, FMA) and this \
                  CPU lacks them; build it with RUSTFLAGS=\"-C target-cpu=x86-64\"\n",
            );
            std::process::exit(1);
        }
    }

    /// Whether this CPU and its OS run AVX, AVX2, BMI1, BMI2, FMA and MOVBE code.
    #[inline(always)]
    fn has_the_build_target() -> bool {
        let bit = |word: u32, n: u32| std::hint::black_box(word >> n) & 1 == 1;
        // Leaf 7 is read only when the highest leaf reported covers it.
        if __cpuid(0).eax < 7 {
            return false;
        }
        let (features, extended) = (__cpuid(1), __cpuid_count(7, 0));
        let avx_and_os = bit(features.ecx, 28) && bit(features.ecx, 27);
        if !avx_and_os {
            return false;
        }
        // The OS saves the vector registers (XCR0 bits 1 and 2) only if it enables them.
        let xcr0: u32;
        // SAFETY: XGETBV is available once CPUID reports OSXSAVE (checked above).
        unsafe {
            std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") xcr0, out("edx") _,
                options(nomem, nostack, preserves_flags));
        }
        bit(xcr0, 1)
            && bit(xcr0, 2)
            && bit(features.ecx, 12)
            && bit(features.ecx, 22)
            && bit(extended.ebx, 3)
            && bit(extended.ebx, 5)
            && bit(extended.ebx, 8)
    }
}
