//! Build settings of the kernel object.
//!
//! - Rebuild when the linker changes (a rebuilt bpf-linker can change codegen).
//! - bpf-linker passes `--bpf-expand-memcpy-in-order` to LLVM by default, which turns off LLVM's
//!   own expansion of memory intrinsics so that memcpy is expanded in order by the BPF target;
//!   memset has no such expansion, so every zeroed struct became a call to a byte-at-a-time loop
//!   (a 40-byte `FileId` took 200 instructions on each monitored open). With the flag off LLVM
//!   expands both into word stores. No kernel JIT this project runs on pattern-matches memcpy;
//!   `kernel::stack_budget` (which also checks no builtin is called) and the verifier check the
//!   result.
fn main() {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let linker = dir.join("bpf-linker");
            if linker.exists() {
                println!("cargo:rerun-if-changed={}", linker.display());
                break;
            }
        }
    }
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
