//! `vigil`: the daemon and its command-line tools (see `cli`).

mod cli;

/// Most malloc arenas glibc keeps. Its default is eight per core, and every pipeline stage runs
/// on its own thread: under a storm each stage's arena grows to its own high-water mark, and
/// what one thread frees another cannot reuse. Two arenas measured the daemon's peak RSS at
/// 75 MiB instead of 100 MiB on the open+read storm, at the same events per CPU-second
/// (BENCHMARKS.md, Ingest, "malloc arenas").
const MALLOC_ARENAS: libc::c_int = 2;

fn main() -> std::process::ExitCode {
    // Before any thread starts: arenas are assigned as threads first allocate.
    // SAFETY: mallopt only sets an allocator parameter; no pointer is passed.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    cli::main()
}
