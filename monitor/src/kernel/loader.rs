//! Loading the embedded kernel programs with this kernel's layouts and attaching them.
//!
//! Dropping [`KernelMonitor`] detaches every program and closes every map: nothing stays loaded.

use std::collections::BTreeMap;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FExit, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use vigil_common::{counter, kind, FileReadStats, FoldFileCtime, FoldFileKey, OpenFileKey, Policy};

use super::{
    btf::Btf,
    layout,
    links::{self, held_links, HeldLink, LinkChange},
    tracefs::Tracefs,
    PreflightError,
};

/// The kernel object built by monitor/build.rs.
pub(crate) static KERNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// The same programs and the fexit programs' `tp_btf` twins (monitor-ebpf/src/entry_check.rs),
/// for the test that verifies them where the kernel refuses fexit.
#[cfg(test)]
static ENTRY_CHECK_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/entry-check"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("loading the kernel object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("kernel program `{program}` failed to load (verifier or kernel refused it): {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching `{program}` to {hook} failed: {source}")]
    Attach {
        program: &'static str,
        hook: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("kernel program `{0}` is missing from the kernel object")]
    MissingProgram(String),
    #[error("cannot read the daemon's own links in /proc/self/fdinfo: {0}")]
    Links(#[source] std::io::Error),
    #[error("kernel program `{program}` is not of the kind its hook needs: {source}")]
    ProgramKind {
        program: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the fexit program on `{function}` failed to load or attach: {source}")]
    SyscallEntry {
        function: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("no table of syscall entry functions for this architecture")]
    NoSyscallEntries,
    #[error("map `{name}`: {detail}")]
    Map { name: &'static str, detail: String },
    #[error("the empty datagram hooks of the floor: {0}")]
    FloorHooks(#[source] super::respond::MechanismError),
}

/// What the daemon asks of the kernel side.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub policy: Policy,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Processes never monitored (the daemon itself).
    pub ignore_tgids: Vec<u32>,
    /// Routine files whose read-only opens the kernel folds (see `crate::fold_files`).
    pub routine_files: Vec<(FoldFileKey, FoldFileCtime)>,
    /// Files never folded (the watched files), in the kernel's list before the first event.
    pub never_fold: Vec<FoldFileKey>,
    /// The cheapest hook to try for followed syscalls' exits; the daemon goes down
    /// [`SysExitHook`]'s order from there to the first the kernel accepts.
    pub sys_exit_from: SysExitHook,
}

struct Hook {
    category: &'static str,
    name: &'static str,
}

const fn req(category: &'static str, name: &'static str) -> Hook {
    Hook { category, name }
}

/// Program name and the tracepoints it attaches to.
const TRACEPOINTS: &[(&str, &[Hook])] = &[
    ("vigil_exec", &[req("sched", "sched_process_exec")]),
    ("vigil_exit", &[req("sched", "sched_process_exit")]),
    (
        "vigil_creds",
        &[
            req("syscalls", "sys_enter_execve"),
            req("syscalls", "sys_enter_execveat"),
            req("syscalls", "sys_enter_setuid"),
            req("syscalls", "sys_enter_setreuid"),
            req("syscalls", "sys_enter_setresuid"),
            req("syscalls", "sys_enter_setfsuid"),
            req("syscalls", "sys_enter_setgid"),
            req("syscalls", "sys_enter_setregid"),
            req("syscalls", "sys_enter_setresgid"),
            req("syscalls", "sys_enter_setfsgid"),
        ],
    ),
];

/// Raw tracepoints: program name and tracepoint.
const RAW_TRACEPOINTS: &[(&str, &str)] = &[("vigil_fork", "sched_process_fork")];

/// The change-time tracepoints (`timestamp/`, Linux 6.13 and later) the `link` programs keep a
/// call's changed inodes from (monitor-ebpf/src/link.rs): typed program and tracepoint. Each
/// is attached where the kernel has it; where none is, a `link` event carries only the names
/// the caller passed, and says so.
const CTIME_TRACEPOINTS: &[(&str, &str)] = &[
    ("vigil_ctime_xchg", "ctime_ns_xchg"),
    ("vigil_ctime_skip", "ctime_xchg_skip"),
    ("vigil_ctime_set", "inode_set_ctime_to_ts"),
];

/// Attaches [`CTIME_TRACEPOINTS`] where the kernel has them. One the kernel has but refuses is
/// an error: the inodes of the calls that name a file would go unnamed.
fn attach_ctime_hooks(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    tracefs: &Tracefs,
    attached: &mut Vec<String>,
) -> Result<(), LoadError> {
    let Some(btf) = btf else {
        return Ok(());
    };
    for &(program, tracepoint) in CTIME_TRACEPOINTS {
        if !tracefs.has_event("timestamp", tracepoint) {
            tracing::info!(
                tracepoint,
                "no change-time tracepoint on this kernel: link events name directories by path only"
            );
            continue;
        }
        let prog: &mut BtfTracePoint = program_of(ebpf, program)?;
        prog.load(tracepoint, btf)
            .map_err(|source| LoadError::Program { program, source })?;
        prog.attach().map_err(|source| LoadError::Attach {
            program,
            hook: format!("tp_btf/{tracepoint}"),
            source,
        })?;
        attached.push(format!("tp_btf/{tracepoint}"));
    }
    Ok(())
}

/// How every followed syscall's exit reaches the programs (see monitor-ebpf/src/syscalls.rs),
/// cheapest first: the daemon takes the first the kernel accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SysExitHook {
    /// One `fexit` program on each followed syscall's entry function
    /// ([`vigil_common::X86_64_SYSCALL_ENTRIES`]): a syscall nobody follows runs no program,
    /// and a followed one only its own handler. Where the kernel allows fexit (not this
    /// project's test machines, which refuse it at load).
    Fexit,
    /// `tp_btf/sys_exit`: the registers are a typed pointer, read with checked loads.
    BtfTracepoint,
    /// `raw_tp/sys_exit`: the registers read with a helper call each; where the kernel refuses
    /// the typed program.
    RawTracepoint,
}

impl std::fmt::Display for SysExitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SysExitHook::Fexit => "fexit/syscall entries",
            SysExitHook::BtfTracepoint => "tp_btf/sys_exit",
            SysExitHook::RawTracepoint => "raw_tp/sys_exit",
        })
    }
}

/// One `sys_exit` program built for both hooks: its typed and its raw name, and whether the
/// fexit programs on the syscall entry functions stand for it.
struct SysExitPrograms {
    typed: &'static str,
    raw: &'static str,
    fexit: bool,
}

/// The daemon's program on every followed syscall's exit.
const CAPTURE_SYS_EXIT: SysExitPrograms = SysExitPrograms {
    typed: "vigil_sys_exit",
    raw: "vigil_raw_exit",
    fexit: true,
};

/// The empty program of the overhead benchmark's floor (on the tracepoint hooks only: where
/// the daemon runs on fexit, its cost has no single program to compare with).
const FLOOR_SYS_EXIT: SysExitPrograms = SysExitPrograms {
    typed: "vigil_floor",
    raw: "vigil_raw_floor",
    fexit: false,
};

/// The kernel object's program for syscall entry `index` of [`SYSCALL_ENTRIES`].
pub(crate) fn syscall_entry_program(index: usize) -> String {
    format!("vigil_fexit_{index}")
}

/// The entry functions of followed syscalls on this architecture (none where Vigil has no
/// table of them: the daemon then goes through `sys_exit`).
#[cfg(target_arch = "x86_64")]
pub(crate) const SYSCALL_ENTRIES: &[vigil_common::SyscallEntry] =
    vigil_common::X86_64_SYSCALL_ENTRIES;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const SYSCALL_ENTRIES: &[vigil_common::SyscallEntry] = &[];

/// Loads and attaches one fexit program on each syscall entry function, all or none: a
/// followed syscall left without its program would be a way around capture, so on any refusal
/// every one loaded so far is unloaded (detaching it) before the error is returned. The first
/// refusal comes at the first program on kernels without fexit (EPERM, as here).
fn attach_syscall_entries(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), LoadError> {
    if SYSCALL_ENTRIES.is_empty() {
        return Err(LoadError::NoSyscallEntries);
    }
    let mut done = 0;
    let result = (|| {
        for (index, entry) in SYSCALL_ENTRIES.iter().enumerate() {
            let name = syscall_entry_program(index);
            let prog: &mut FExit = program_of(ebpf, &name)?;
            let function = entry.function;
            prog.load(function, btf)
                .map_err(|source| LoadError::SyscallEntry { function, source })?;
            done = index + 1;
            prog.attach()
                .map_err(|source| LoadError::SyscallEntry { function, source })?;
        }
        Ok(())
    })();
    if result.is_err() {
        for index in 0..done {
            if let Ok(prog) = program_of::<FExit>(ebpf, &syscall_entry_program(index)) {
                if let Err(error) = prog.unload() {
                    tracing::warn!(%error, index, "unloading a syscall entry program failed");
                }
            }
        }
    }
    result
}

/// The kernel's BTF as aya reads it, to resolve the typed hooks' ids; `None` (logged) when it
/// cannot be read. About 12 MiB while it lives, and the daemon's peak memory is a target: read
/// once for every typed program, and dropped once they are attached.
fn kernel_btf() -> Option<aya::Btf> {
    match aya::Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(error) => {
            tracing::warn!(%error, "cannot read the kernel's BTF: going through raw_tp/sys_exit, and link events carry only the names passed");
            None
        }
    }
}

/// Attaches the cheapest hook for followed syscalls' exits the kernel accepts, from `from` on:
/// the fexit programs (the daemon's own, not the floor's), then the typed `sys_exit` program,
/// then the raw one. Each refusal is logged with why.
fn attach_sys_exit(
    ebpf: &mut Ebpf,
    programs: &SysExitPrograms,
    from: SysExitHook,
    btf: Option<&aya::Btf>,
) -> Result<SysExitHook, LoadError> {
    let btf = match from {
        SysExitHook::RawTracepoint => None,
        _ => btf,
    };
    if let (SysExitHook::Fexit, true, Some(btf)) = (from, programs.fexit, btf) {
        match attach_syscall_entries(ebpf, btf) {
            Ok(()) => return Ok(SysExitHook::Fexit),
            Err(error) => tracing::warn!(
                %error,
                "the kernel refused fexit on the syscall entry functions: going through sys_exit"
            ),
        }
    }
    if let Some(btf) = btf {
        match attach_typed_sys_exit(ebpf, programs.typed, btf) {
            Ok(()) => return Ok(SysExitHook::BtfTracepoint),
            Err(error) => tracing::warn!(
                %error,
                program = programs.typed,
                "the kernel refused tp_btf/sys_exit: going through raw_tp/sys_exit"
            ),
        }
    }
    attach_raw_sys_exit(ebpf, programs.raw)?;
    Ok(SysExitHook::RawTracepoint)
}

fn attach_typed_sys_exit(
    ebpf: &mut Ebpf,
    program: &'static str,
    btf: &aya::Btf,
) -> Result<(), LoadError> {
    let prog: &mut BtfTracePoint = program_of(ebpf, program)?;
    prog.load("sys_exit", btf)
        .map_err(|source| LoadError::Program { program, source })?;
    prog.attach().map_err(|source| LoadError::Attach {
        program,
        hook: SysExitHook::BtfTracepoint.to_string(),
        source,
    })?;
    Ok(())
}

fn attach_raw_sys_exit(ebpf: &mut Ebpf, program: &'static str) -> Result<(), LoadError> {
    let prog: &mut RawTracePoint = program_of(ebpf, program)?;
    prog.load()
        .map_err(|source| LoadError::Program { program, source })?;
    prog.attach("sys_exit")
        .map_err(|source| LoadError::Attach {
            program,
            hook: SysExitHook::RawTracepoint.to_string(),
            source,
        })?;
    Ok(())
}

/// Checks the host, finds this kernel's layouts and loads the kernel object with them (maps
/// created, no program loaded yet).
fn open_object(object: &[u8], ring_buffer_bytes: u32) -> Result<(Ebpf, Tracefs), LoadError> {
    super::check_root()?;
    let btf = Btf::from_kernel()?;
    let tracefs = Tracefs::find_or_mount()?;
    let offsets = layout::kernel_offsets(&btf)?;
    let tp_layout = layout::tracepoint_layout(&tracefs)?;
    let syscall_abi = layout::syscall_abi(&btf)?;
    // Gone before the loader reads the kernel's BTF again for its own relocations: the two
    // parses held at once were the daemon's peak memory.
    drop(btf);
    tracing::debug!(?offsets, ?tp_layout, "kernel layouts");

    // One scratch slot per possible CPU (ids index the slots).
    let scratch_slots = aya::util::nr_cpus().map_err(|(path, source)| LoadError::Map {
        name: "EXEC_SCRATCH",
        detail: format!("cannot count CPUs from {path}: {source}"),
    })? as u32;
    let ebpf = EbpfLoader::new()
        .override_global("KERNEL_OFFSETS", &offsets, true)
        .override_global("TP_LAYOUT", &tp_layout, true)
        .override_global("SYSCALL_ABI", &syscall_abi, true)
        .map_max_entries("EVENTS", ring_buffer_bytes)
        .map_max_entries("EXEC_SCRATCH", scratch_slots)
        .map_max_entries("OPEN_SCRATCH", scratch_slots)
        .map_max_entries("TTY_SCRATCH", scratch_slots)
        .map_max_entries("CONNECT_SCRATCH", scratch_slots)
        .map_max_entries("LINK_SCRATCH", scratch_slots)
        .load(object)?;
    Ok((ebpf, tracefs))
}

/// Totals of one kernel counter slot, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounters {
    pub emitted: u64,
    pub filtered: u64,
    pub lost: u64,
    pub truncated: u64,
    /// Lost because a kernel-side table was full (see `counter::UNTRACKED`).
    pub untracked: u64,
    /// Acted on by a response in force (an exec denied, a connection refused, a process of a
    /// killed or held session signalled).
    pub enforced: u64,
}

impl KindCounters {
    /// Every outcome by name, in one order: metrics, heartbeats and the checks of them agree.
    pub fn outcomes(&self) -> [(&'static str, u64); 6] {
        [
            ("emitted", self.emitted),
            ("filtered", self.filtered),
            ("lost", self.lost),
            ("truncated", self.truncated),
            ("untracked", self.untracked),
            ("enforced", self.enforced),
        ]
    }
}

/// The kernel's per-CPU counters, owned by the stage that publishes them (stats).
pub struct KernelCounters {
    counters: PerCpuArray<MapData, u64>,
}

/// The kernel's table of open files whose reads it counts, owned by the stage that reports
/// what is left in it when a process exits (enrich). No other stage reaches it.
pub struct OpenFiles {
    open_files: HashMap<MapData, OpenFileKey, FileReadStats>,
    /// Files the kernel never folds: the watched files, kept in step with them.
    never_fold: HashMap<MapData, FoldFileKey, u8>,
}

/// The loaded and attached kernel side. The maps a stage needs are taken out of it once, as
/// typed handles that stage owns: nothing is shared behind a lock.
pub struct KernelMonitor {
    /// Owns the programs and their links.
    _ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    counters: Option<KernelCounters>,
    open_files: Option<OpenFiles>,
    policy: Array<MapData, Policy>,
    /// What the daemon wrote, to check the kernel still holds it (someone with root can write
    /// these maps too: to widen the ignore list, or narrow the scope).
    expected_policy: Policy,
    ignored: HashMap<MapData, u32, u8>,
    expected_ignored: std::collections::BTreeSet<u32>,
    routine: HashMap<MapData, FoldFileKey, FoldFileCtime>,
    expected_routine: std::collections::HashMap<FoldFileKey, FoldFileCtime>,
    /// `LOGINUID_OPENED`, and whether it was ever seen set (it is never cleared but by hand).
    loginuid_written: Array<MapData, u32>,
    loginuid_written_seen: bool,
    /// The kernel's ids of the loaded programs, by name.
    program_ids: Vec<(String, u32)>,
    /// The links the daemon attached, as the kernel showed them then: a link detached, or
    /// running another program since, is tampering (see `links`).
    expected_links: BTreeMap<u32, HeldLink>,
    /// The cgroup connect hooks, attached again when taken away.
    connect_hooks: Option<super::respond::ConnectHooks>,
    /// The maps responses write, handed to the respond stage once.
    responder: Option<super::respond::KernelResponder>,
    /// Hooks attached, as `category/name`.
    pub attached: Vec<String>,
    /// Which program followed syscalls' exits go through.
    pub sys_exit: SysExitHook,
}

impl KernelMonitor {
    /// Checks the host, finds layouts, loads and attaches everything.
    pub fn load(opts: &LoadOptions) -> Result<KernelMonitor, LoadError> {
        let (mut ebpf, tracefs) = open_object(KERNEL_OBJECT, opts.ring_buffer_bytes)?;

        let mut policy: Array<MapData, Policy> = take_map(&mut ebpf, "POLICY")?;
        policy.set(0, opts.policy, 0).map_err(|e| LoadError::Map {
            name: "POLICY",
            detail: e.to_string(),
        })?;
        let mut ignored: HashMap<MapData, u32, u8> = take_map(&mut ebpf, "IGNORED_TGIDS")?;
        for tgid in &opts.ignore_tgids {
            ignored.insert(tgid, 1, 0).map_err(|e| LoadError::Map {
                name: "IGNORED_TGIDS",
                detail: e.to_string(),
            })?;
        }
        let mut routine: HashMap<MapData, FoldFileKey, FoldFileCtime> =
            take_map(&mut ebpf, "FOLD_ROUTINE")?;
        for (key, ctime) in &opts.routine_files {
            routine.insert(key, ctime, 0).map_err(|e| LoadError::Map {
                name: "FOLD_ROUTINE",
                detail: e.to_string(),
            })?;
        }
        let mut never_fold: HashMap<MapData, FoldFileKey, u8> = take_map(&mut ebpf, "FOLD_NEVER")?;
        let mut loginuid_written: Array<MapData, u32> = take_map(&mut ebpf, "LOGINUID_OPENED")?;
        // A `loginuid` file already open for writing (before the programs could see its open)
        // may yet be written: then no process skips the session lookup.
        let already = loginuid_files_open();
        if already {
            loginuid_written.set(0, 1, 0).map_err(|e| LoadError::Map {
                name: "LOGINUID_OPENED",
                detail: e.to_string(),
            })?;
            tracing::info!("a loginuid file is open for writing: every process is looked up in the session map");
        }
        for key in &opts.never_fold {
            never_fold.insert(key, 1, 0).map_err(|e| LoadError::Map {
                name: "FOLD_NEVER",
                detail: e.to_string(),
            })?;
        }
        let counters = take_map(&mut ebpf, "COUNTERS")?;
        let open_files = take_map(&mut ebpf, "OPEN_FILES")?;
        let events = take_map(&mut ebpf, "EVENTS")?;

        let mut attached = Vec::new();
        for (program, hooks) in TRACEPOINTS {
            let prog: &mut TracePoint = program_of(&mut ebpf, program)?;
            prog.load()
                .map_err(|source| LoadError::Program { program, source })?;
            for hook in *hooks {
                let label = format!("{}/{}", hook.category, hook.name);
                if !tracefs.has_event(hook.category, hook.name) {
                    return Err(PreflightError::MissingTracepoint {
                        tracepoint: label,
                        detail: "not present in tracefs events/".into(),
                    }
                    .into());
                }
                prog.attach(hook.category, hook.name)
                    .map_err(|source| LoadError::Attach {
                        program,
                        hook: label.clone(),
                        source,
                    })?;
                attached.push(label);
            }
        }
        for (program, tp) in RAW_TRACEPOINTS {
            let prog: &mut RawTracePoint = program_of(&mut ebpf, program)?;
            prog.load()
                .map_err(|source| LoadError::Program { program, source })?;
            prog.attach(tp).map_err(|source| LoadError::Attach {
                program,
                hook: format!("raw_tp/{tp}"),
                source,
            })?;
            attached.push(format!("raw_tp/{tp}"));
        }
        let btf = kernel_btf();
        let sys_exit = attach_sys_exit(
            &mut ebpf,
            &CAPTURE_SYS_EXIT,
            opts.sys_exit_from,
            btf.as_ref(),
        )?;
        attached.push(sys_exit.to_string());
        attach_ctime_hooks(&mut ebpf, btf.as_ref(), &tracefs, &mut attached)?;
        drop(btf);
        let (responder, connect_hooks) =
            super::respond::KernelResponder::load(&mut ebpf, &mut attached)?;
        let program_ids = ebpf
            .programs()
            .filter_map(|(name, p)| Some((name.to_string(), p.info().ok()?.id())))
            .collect();
        let expected_links = held_links().map_err(LoadError::Links)?;
        Ok(KernelMonitor {
            _ebpf: ebpf,
            events: Some(events),
            counters: Some(KernelCounters { counters }),
            open_files: Some(OpenFiles {
                open_files,
                never_fold,
            }),
            policy,
            expected_policy: opts.policy,
            ignored,
            expected_ignored: opts.ignore_tgids.iter().copied().collect(),
            routine,
            expected_routine: opts.routine_files.iter().copied().collect(),
            loginuid_written,
            loginuid_written_seen: already,
            program_ids,
            expected_links,
            connect_hooks,
            responder: Some(responder),
            attached,
            sys_exit,
        })
    }

    /// The response maps, handed to the respond stage once.
    pub fn take_responder(&mut self) -> Option<super::respond::KernelResponder> {
        self.responder.take()
    }

    /// The ring buffer, handed to the capture stage once.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The counters, handed to the stats stage once.
    pub fn take_counters(&mut self) -> Option<KernelCounters> {
        self.counters.take()
    }

    /// The open-file table, handed to the enrich stage once.
    pub fn take_open_files(&mut self) -> Option<OpenFiles> {
        self.open_files.take()
    }

    /// Replaces the scoping policy at run time.
    pub fn set_policy(&mut self, policy: Policy) -> Result<(), LoadError> {
        self.policy.set(0, policy, 0).map_err(|e| LoadError::Map {
            name: "POLICY",
            detail: e.to_string(),
        })?;
        self.expected_policy = policy;
        Ok(())
    }

    /// What is not as the daemon left it: the policy, the ignore list, the programs.
    pub fn check_integrity(&mut self) -> Vec<(crate::event::TamperCheck, String)> {
        use crate::event::TamperCheck;
        let mut out = Vec::new();
        match self.policy.get(&0, 0) {
            Ok(p) if p == self.expected_policy => {}
            Ok(p) => out.push((
                TamperCheck::PolicyChanged,
                format!(
                    "the kernel's policy is {p:?}, the daemon wrote {:?}",
                    self.expected_policy
                ),
            )),
            Err(e) => out.push((
                TamperCheck::PolicyChanged,
                format!("the policy map is unreadable: {e}"),
            )),
        }
        let now: std::collections::BTreeSet<u32> =
            self.ignored.keys().filter_map(Result::ok).collect();
        if now != self.expected_ignored {
            let added: Vec<&u32> = now.difference(&self.expected_ignored).collect();
            let removed: Vec<&u32> = self.expected_ignored.difference(&now).collect();
            out.push((
                TamperCheck::IgnoreListChanged,
                format!("processes not watched: added {added:?}, removed {removed:?}"),
            ));
        }
        match self.loginuid_written.get(&0, 0) {
            Ok(0) if self.loginuid_written_seen => {
                out.push((
                    TamperCheck::LoginuidFlagReset,
                    "the kernel's login-uid-written flag was set and is clear again".into(),
                ));
                // Set it again: processes that unset their login uid stay in scope.
                let _ = self.loginuid_written.set(0, 1, 0);
            }
            Ok(0) => {}
            Ok(_) => self.loginuid_written_seen = true,
            Err(e) => out.push((
                TamperCheck::LoginuidFlagReset,
                format!("the login-uid-written flag is unreadable: {e}"),
            )),
        }
        // Every key and value read back (16k at most, every few seconds: a few ms).
        let mut extra = 0usize;
        let mut seen = 0usize;
        for entry in self.routine.iter() {
            match entry {
                Ok((k, v)) if self.expected_routine.get(&k) == Some(&v) => seen += 1,
                _ => extra += 1,
            }
        }
        if extra != 0 || seen != self.expected_routine.len() {
            out.push((
                TamperCheck::FoldListChanged,
                format!(
                    "the kernel's routine files: {extra} not registered by the daemon, {} of \
                     its {} missing",
                    self.expected_routine.len().saturating_sub(seen),
                    self.expected_routine.len()
                ),
            ));
        }
        let loaded: std::collections::HashSet<u32> = aya::programs::loaded_programs()
            .filter_map(|p| p.ok().map(|info| info.id()))
            .collect();
        if !loaded.is_empty() {
            for (name, id) in &self.program_ids {
                if !loaded.contains(id) {
                    out.push((
                        TamperCheck::ProgramGone,
                        format!("program {name} (id {id}) is no longer loaded"),
                    ));
                }
            }
        }
        self.check_links(&mut out);
        out
    }

    /// A link detached (`bpftool link detach`), running another program (`BPF_LINK_UPDATE`)
    /// or gone: reported, and a connect hook attached again. Each report names the link's id,
    /// so a hook taken away again is reported again.
    fn check_links(&mut self, out: &mut Vec<(crate::event::TamperCheck, String)>) {
        use crate::event::TamperCheck;
        let now = match held_links() {
            Ok(now) => now,
            Err(e) => {
                out.push((
                    TamperCheck::HookDetached,
                    format!("the daemon's links are unreadable in /proc/self/fdinfo: {e}"),
                ));
                return;
            }
        };
        let changes: Vec<(HeldLink, LinkChange)> = links::changed(&self.expected_links, &now)
            .into_iter()
            .map(|(was, how)| (was.clone(), how))
            .collect();
        if changes.is_empty() {
            return;
        }
        let mut repaired = false;
        for (was, how) in changes {
            let program = self
                .program_ids
                .iter()
                .find(|(_, id)| Some(*id) == was.prog_id)
                .map(|(name, _)| name.clone())
                .unwrap_or_else(|| "an unknown program".into());
            let what = match how {
                LinkChange::Gone => "is gone".to_string(),
                LinkChange::Detached => "was detached from its cgroup".to_string(),
                LinkChange::ProgramReplaced { now } => format!(
                    "runs another program now ({})",
                    now.map_or("none".into(), |id| format!("id {id}"))
                ),
            };
            let mut detail = format!("link {} ({}, {program}) {what}", was.id, was.link_type);
            match self.connect_hooks.as_mut() {
                Some(hooks) if hooks.holds(&program) => {
                    match hooks.reattach(&mut self._ebpf, &program) {
                        Ok(()) => detail.push_str("; attached again"),
                        Err(e) => detail.push_str(&format!("; attaching it again failed: {e}")),
                    }
                    repaired = true;
                }
                _ => {}
            }
            // Reported once: what it is now is what is expected from here on.
            self.expected_links.remove(&was.id);
            out.push((TamperCheck::HookDetached, detail));
        }
        if repaired {
            // The new links are expected from now on (those found unchanged stay as they were).
            if let Ok(now) = held_links() {
                for (id, link) in now {
                    let ours = link
                        .prog_id
                        .is_some_and(|p| self.program_ids.iter().any(|(_, id)| *id == p));
                    if ours && link.cgroup_id != Some(0) {
                        self.expected_links.entry(id).or_insert(link);
                    }
                }
            }
        }
    }
}

impl KernelCounters {
    /// Kernel counters per event kind, summed over CPUs.
    pub fn read(&self) -> Result<Vec<(u16, KindCounters)>, LoadError> {
        let mut out = Vec::new();
        for k in 1..kind::COUNT {
            let mut sum = [0u64; counter::OUTCOMES as usize];
            for (outcome, total) in sum.iter_mut().enumerate() {
                let values = self
                    .counters
                    .get(&counter::index(k, outcome as u32), 0)
                    .map_err(|e| LoadError::Map {
                        name: "COUNTERS",
                        detail: e.to_string(),
                    })?;
                *total = values.iter().sum();
            }
            out.push((
                k,
                KindCounters {
                    emitted: sum[counter::EMITTED as usize],
                    filtered: sum[counter::FILTERED as usize],
                    lost: sum[counter::LOST as usize],
                    truncated: sum[counter::TRUNCATED as usize],
                    untracked: sum[counter::UNTRACKED as usize],
                    enforced: sum[counter::ENFORCED as usize],
                },
            ));
        }
        Ok(out)
    }
}

impl OpenFiles {
    /// Removes and returns the read volume still kept for an open file (process exit flush).
    pub fn take(&mut self, key: OpenFileKey) -> Option<FileReadStats> {
        let stats = self.open_files.get(&key, 0).ok()?;
        // Removal can only fail if the kernel removed it first (a close raced us), in which case
        // the close already reported it: report nothing then, or it would count twice.
        self.open_files.remove(&key).ok()?;
        Some(stats)
    }

    /// Makes the kernel's never-fold list the watched files `keys`: new ones added, those no
    /// longer watched (a replaced file's old inode) removed. Returns how many could not be
    /// written (the map full); those files may fold their repeats.
    pub fn set_never_fold(&mut self, keys: &std::collections::HashSet<FoldFileKey>) -> usize {
        let now: Vec<FoldFileKey> = self.never_fold.keys().filter_map(Result::ok).collect();
        for old in now.iter().filter(|k| !keys.contains(k)) {
            let _ = self.never_fold.remove(old);
        }
        let mut failed = 0;
        for key in keys {
            if self.never_fold.insert(key, 1, 0).is_err() {
                failed += 1;
            }
        }
        failed
    }

    /// Keys of every open file the kernel is counting.
    pub fn keys(&self) -> Vec<OpenFileKey> {
        self.open_files.keys().filter_map(Result::ok).collect()
    }
}

/// The program `name` of the kernel object, as its type `P`.
fn program_of<'a, P>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(program)
        .ok_or_else(|| LoadError::MissingProgram(program.to_string()))?
        .try_into()
        .map_err(|source| LoadError::ProgramKind {
            program: program.to_string(),
            source,
        })
}

pub(super) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| LoadError::Map {
        name,
        detail: "missing from the kernel object".into(),
    })?;
    T::try_from(map).map_err(|e| LoadError::Map {
        name,
        detail: e.to_string(),
    })
}

/// The empty program on the daemon's `sys_exit` hook, loaded and attached alone (the overhead
/// benchmark's floor: what the mechanism costs before any of Vigil's work). Detached on drop.
pub struct FloorProgram {
    /// The empty datagram hooks (dropped before the object that holds their programs).
    _datagram_hooks: super::respond::ConnectHooks,
    _ebpf: Ebpf,
    /// The hook it went on.
    pub hook: SysExitHook,
    /// The datagram hooks it went on too (`cgroup/sendmsg4`, ...).
    pub datagram_hooks: Vec<String>,
}

impl FloorProgram {
    pub fn attach() -> Result<FloorProgram, LoadError> {
        super::check_root()?;
        // Smallest maps: only the program runs, and it touches none.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", 64 * 1024)
            .load(KERNEL_OBJECT)?;
        // The hook the daemon takes by default, chosen the same way.
        let hook = attach_sys_exit(
            &mut ebpf,
            &FLOOR_SYS_EXIT,
            SysExitHook::BtfTracepoint,
            kernel_btf().as_ref(),
        )?;
        // The daemon's datagram hooks have a floor of their own: every datagram a process
        // addresses passes them.
        let datagram_hooks = super::respond::ConnectHooks::attach_programs(
            &mut ebpf,
            &super::respond::ConnectHooks::FLOOR_PROGRAMS,
        )
        .map_err(LoadError::FloorHooks)?;
        Ok(FloorProgram {
            datagram_hooks: datagram_hooks.names(),
            _datagram_hooks: datagram_hooks,
            _ebpf: ebpf,
            hook,
        })
    }
}

/// Whether any process holds a `/proc/<pid>/loginuid` file open (read through `/proc/*/fd`).
fn loginuid_files_open() -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true; // cannot tell: the safe answer
    };
    for p in procs.flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path())
                .is_ok_and(|t| t.file_name().is_some_and(|n| n == "loginuid"))
            {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

    /// The kernel object holds one fexit program per syscall entry function, under the name
    /// the loader asks for, and no other: none is left unattached, none is missing.
    #[test]
    fn one_fexit_program_per_syscall_entry() {
        let file = object::File::parse(super::KERNEL_OBJECT).expect("the kernel object parses");
        let mut fexit: Vec<String> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .filter(|s| {
                s.section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .and_then(|sec| sec.name().ok().map(|n| n == "fexit"))
                    .unwrap_or(false)
            })
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect();
        fexit.sort();
        let mut expected: Vec<String> = (0..super::SYSCALL_ENTRIES.len())
            .map(super::syscall_entry_program)
            .collect();
        expected.sort();
        assert_eq!(fexit, expected);
    }

    /// Every fexit program's code passes this kernel's verifier. The kernel refuses fexit
    /// itself, so each program's twin on `tp_btf/sys_exit` is loaded instead (the same code,
    /// program type and context: see monitor-ebpf/src/entry_twins.rs), from the `entry-check`
    /// object with this kernel's layouts, and never attached.
    #[test]
    fn every_syscall_entry_program_passes_the_verifier() {
        let (mut ebpf, _tracefs) =
            super::open_object(super::ENTRY_CHECK_OBJECT, 64 * 1024).expect("the object opens");
        let btf = aya::Btf::from_sys_fs().expect("the kernel's BTF");
        let started = std::time::Instant::now();
        let mut refused = Vec::new();
        for (index, entry) in super::SYSCALL_ENTRIES.iter().enumerate() {
            let name = format!("vigil_fxchk_{index}");
            let prog: &mut aya::programs::BtfTracePoint =
                super::program_of(&mut ebpf, &name).expect("the twin is in the object");
            if let Err(error) = prog.load("sys_exit", &btf) {
                refused.push(format!("{name} ({}): {error:?}", entry.function));
            }
        }
        assert!(refused.is_empty(), "{}", refused.join("\n"));
        eprintln!(
            "{} entry programs verified in {:?}",
            super::SYSCALL_ENTRIES.len(),
            started.elapsed()
        );
    }
}
