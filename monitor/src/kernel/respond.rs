//! The kernel's half of responses (see monitor-ebpf/src/respond.rs): the maps the respond stage
//! writes, the session membership it reads, and which mechanisms this kernel gives.
//!
//! Probed at load: the cgroup connect programs need cgroup v2 (attached at its root, so every
//! process of the host passes them); denying an exec in the LSM hook `bprm_check_security`
//! (refusing the exec itself, with `EPERM`) needs the BPF LSM enabled in the kernel's `lsm=`
//! list, and is loaded only then. Where it is not, or the kernel refuses the program (as on the
//! kernels this project is tested on, so only this fallback is exercised), a denied program is
//! killed at `sched_process_exec` instead, before its first instruction.

use std::{
    collections::BTreeMap,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::Path,
};

use aya::{
    maps::{Array, HashMap, MapData},
    programs::{cgroup_sock_addr::CgroupSockAddrLinkId, links::CgroupAttachMode, CgroupSockAddr},
    Ebpf,
};
use serde::Serialize;
use vigil_common::{respond, ExeKey, ScopeEntry};

use super::loader::LoadError;
use crate::event::Mechanism;

/// Where the daemon mounts cgroup v2 itself when the host has not (a v1-only host).
const CGROUP2_OWN_MOUNT: &str = "/run/vigil/cgroup2";
/// The kernel's list of active security modules.
const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// How this kernel enforces each kind of response: what `/readyz` and the metrics report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mechanisms {
    /// `lsm_bprm_check` (the exec is refused) or `exec_tracepoint_signal` (the new image is
    /// killed before it runs).
    pub deny_exec: Mechanism,
    /// `cgroup_connect` or `unavailable` (with why).
    pub deny_connect: Mechanism,
    /// Always `signal`: the daemon signals every process of the session, and the kernel
    /// programs signal any it missed at their next exec, fork or followed syscall.
    pub session: Mechanism,
    /// Why a stronger mechanism is not in use, for the operator.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The respond stage's handle on the kernel: nothing else writes these maps.
pub struct KernelResponder {
    active: Array<MapData, u32>,
    verdicts: HashMap<MapData, u32, u32>,
    deny_exec: HashMap<MapData, ExeKey, u32>,
    protected: HashMap<MapData, ExeKey, u8>,
    loaders: HashMap<MapData, ExeKey, u8>,
    scope: HashMap<MapData, u32, ScopeEntry>,
    pub mechanisms: Mechanisms,
}

/// The key of the executable at `path` as the kernel names it (device as `s_dev`, inode),
/// following links: the file a process running it would have as `mm->exe_file`.
pub fn exe_key_of(path: &Path) -> std::io::Result<ExeKey> {
    let meta = std::fs::metadata(path)?;
    Ok(ExeKey {
        ino: meta.ino(),
        dev: crate::event::kernel_dev_number(meta.dev()),
        _pad: 0,
    })
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |e| LoadError::Map {
        name,
        detail: e.to_string(),
    }
}

impl KernelResponder {
    /// Takes the maps, attaches the connect programs where cgroup v2 allows and probes the LSM.
    /// The connect hooks come back apart: the loader keeps them, to attach them again if they
    /// are detached (see `ConnectHooks::reattach`).
    pub(super) fn load(
        ebpf: &mut Ebpf,
        attached: &mut Vec<String>,
    ) -> Result<(Self, Option<ConnectHooks>), LoadError> {
        let mut notes = Vec::new();
        let (deny_connect, connect_hooks) = match ConnectHooks::attach(ebpf) {
            Ok(hooks) => {
                attached.extend(hooks.names());
                (Mechanism::CgroupConnect, Some(hooks))
            }
            Err(why) => {
                notes.push(format!(
                    "deny_connect unavailable, IP connect destinations are read from the caller's buffer after the call, and UDP datagrams sent to an address (no connect(2)) are not reported: {why}"
                ));
                (Mechanism::Unavailable, None)
            }
        };
        let deny_exec = match attach_lsm(ebpf) {
            Ok(hook) => {
                attached.push(hook);
                Mechanism::LsmBprmCheck
            }
            Err(why) => {
                notes.push(format!(
                    "{why}: denied programs are killed at sched_process_exec, before their first instruction"
                ));
                Mechanism::ExecTracepointSignal
            }
        };
        let responder = KernelResponder {
            active: super::loader::take_map(ebpf, "RESPOND_ACTIVE")?,
            verdicts: super::loader::take_map(ebpf, "SESSION_VERDICTS")?,
            deny_exec: super::loader::take_map(ebpf, "DENY_EXEC")?,
            protected: super::loader::take_map(ebpf, "PROTECTED_EXES")?,
            loaders: super::loader::take_map(ebpf, "LOADER_EXES")?,
            scope: super::loader::take_map(ebpf, "SCOPE")?,
            mechanisms: Mechanisms {
                deny_exec,
                deny_connect,
                session: Mechanism::Signal,
                notes,
            },
        };
        Ok((responder, connect_hooks))
    }

    /// Whether outbound connections can be refused here.
    pub fn can_deny_connect(&self) -> bool {
        self.mechanisms.deny_connect == Mechanism::CgroupConnect
    }

    fn refresh_active(&mut self) -> Result<(), LoadError> {
        let mut bits = 0;
        if self.verdicts.keys().next().is_some() {
            bits |= respond::ACTIVE_SESSIONS;
        }
        if self.deny_exec.keys().next().is_some() {
            bits |= respond::ACTIVE_DENY_EXEC;
        }
        self.active
            .set(0, bits, 0)
            .map_err(map_error("RESPOND_ACTIVE"))
    }

    /// The verdict bits in force for `session` (0: none).
    pub fn verdict(&self, session: u32) -> u32 {
        self.verdicts.get(&session, 0).unwrap_or(0)
    }

    /// Sets (`add`) or clears verdict bits of a session.
    pub fn set_verdict(&mut self, session: u32, add: u32, clear: u32) -> Result<u32, LoadError> {
        let bits = (self.verdict(session) | add) & !clear;
        if bits == 0 {
            let _ = self.verdicts.remove(&session);
        } else {
            self.verdicts
                .insert(session, bits, 0)
                .map_err(map_error("SESSION_VERDICTS"))?;
        }
        self.refresh_active()?;
        Ok(bits)
    }

    /// Every session with a verdict, and its bits.
    pub fn verdicts(&self) -> BTreeMap<u32, u32> {
        self.verdicts.iter().filter_map(Result::ok).collect()
    }

    pub fn deny_exe(&mut self, key: ExeKey) -> Result<(), LoadError> {
        self.deny_exec
            .insert(key, 1, 0)
            .map_err(map_error("DENY_EXEC"))?;
        self.refresh_active()
    }

    pub fn allow_exe(&mut self, key: &ExeKey) -> Result<bool, LoadError> {
        let was = self.deny_exec.remove(key).is_ok();
        self.refresh_active()?;
        Ok(was)
    }

    pub fn denied_exes(&self) -> Vec<ExeKey> {
        self.deny_exec.keys().filter_map(Result::ok).collect()
    }

    /// A dynamic loader: its opens of denied executables are refused (see `LOADER_EXES`).
    pub fn add_loader(&mut self, key: ExeKey) -> Result<(), LoadError> {
        self.loaders
            .insert(key, 1, 0)
            .map_err(map_error("LOADER_EXES"))
    }

    pub fn protect_exe(&mut self, key: ExeKey) -> Result<(), LoadError> {
        self.protected
            .insert(key, 1, 0)
            .map_err(map_error("PROTECTED_EXES"))
    }

    /// Every process in the kernel's scope table and its entry. Found by walking `/proc` and
    /// looking each pid up, not by iterating the map: `SCOPE` has 2^22 buckets, and the kernel
    /// walks all of them to iterate it (milliseconds a pass), while a host runs hundreds of
    /// processes.
    pub fn in_scope(&self) -> Vec<(u32, ScopeEntry)> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|tgid| Some((tgid, self.scope.get(&tgid, 0).ok()?)))
            .collect()
    }

    /// The processes (tgids) the kernel holds in `session` by lineage, whatever their audit ids
    /// say now.
    pub fn members(&self, session: u32) -> Vec<u32> {
        self.in_scope()
            .into_iter()
            .filter(|(_, e)| e.sessionid == session)
            .map(|(tgid, _)| tgid)
            .collect()
    }

    /// The session (and its login uid) the kernel holds process `tgid` in.
    pub fn session_of(&self, tgid: u32) -> Option<(u32, u32)> {
        self.scope
            .get(&tgid, 0)
            .ok()
            .map(|e| (e.sessionid, e.loginuid))
    }

    /// Every session with a running process, and its login uid.
    pub fn sessions(&self) -> BTreeMap<u32, u32> {
        self.in_scope()
            .into_iter()
            .map(|(_, e)| (e.sessionid, e.loginuid))
            .collect()
    }
}

/// Why a kernel mechanism for responses is not in use here (an operator's note, in `/readyz`).
#[derive(Debug, thiserror::Error)]
pub enum MechanismError {
    #[error("cannot create {CGROUP2_OWN_MOUNT}: {0}")]
    MountPoint(#[source] std::io::Error),
    #[error("cgroup v2 is not mounted, and mounting it at {CGROUP2_OWN_MOUNT} failed: {0}")]
    Mount(#[source] nix::Error),
    #[error("cannot open {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Statfs {
        path: std::path::PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{0} is not cgroup v2")]
    NotCgroup2(std::path::PathBuf),
    #[error("BPF LSM not enabled ({LSM_LIST}: {0})")]
    LsmOff(String),
    #[error("BPF LSM: no kernel BTF: {0}")]
    Btf(#[source] aya::BtfError),
    #[error("program `{0}` missing from the kernel object")]
    Missing(&'static str),
    /// The kernel refused the program, or attaching it (with the cause aya reports under it).
    #[error("{program}: {what}: {source}{}", cause(source))]
    Program {
        program: &'static str,
        what: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// The error under aya's, spelled out: "the program is not attached" alone says nothing of why.
fn cause(e: &aya::programs::ProgramError) -> String {
    std::error::Error::source(e)
        .map(|c| format!(": {c}"))
        .unwrap_or_default()
}

/// The root of cgroup v2: where the host mounted it, else mounted by the daemon. Every process
/// is in the v2 hierarchy whether or not the host uses it, so programs at its root see every
/// connect.
fn cgroup2_root() -> Result<std::fs::File, MechanismError> {
    let path = match crate::identity::cgroup2_root() {
        Some(p) => p,
        None => {
            let own = Path::new(CGROUP2_OWN_MOUNT);
            std::fs::create_dir_all(own).map_err(MechanismError::MountPoint)?;
            nix::mount::mount(
                Some("cgroup2"),
                own,
                Some("cgroup2"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(MechanismError::Mount)?;
            own.to_path_buf()
        }
    };
    let root = std::fs::File::open(&path).map_err(|source| MechanismError::Open {
        path: path.clone(),
        source,
    })?;
    let statfs =
        nix::sys::statfs::fstatfs(root.as_fd()).map_err(|source| MechanismError::Statfs {
            path: path.clone(),
            source,
        })?;
    if statfs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return Err(MechanismError::NotCgroup2(path));
    }
    Ok(root)
}

/// Loads and attaches `vigil_bprm_check` where the kernel runs the BPF LSM; the hook, or why
/// not (the kernel does not list it, or refuses the program).
fn attach_lsm(ebpf: &mut Ebpf) -> Result<String, MechanismError> {
    const PROGRAM: &str = "vigil_bprm_check";
    let lsm = std::fs::read_to_string(LSM_LIST).unwrap_or_default();
    if !lsm.split(',').any(|m| m.trim() == "bpf") {
        return Err(MechanismError::LsmOff(lsm.trim().to_string()));
    }
    let btf = aya::Btf::from_sys_fs().map_err(MechanismError::Btf)?;
    let program = |what| program_error(PROGRAM, what);
    let prog: &mut aya::programs::Lsm = ebpf
        .program_mut(PROGRAM)
        .ok_or(MechanismError::Missing(PROGRAM))?
        .try_into()
        .map_err(program("not an LSM program"))?;
    prog.load("bprm_check_security", &btf)
        .map_err(program("refused"))?;
    prog.attach().map_err(program("not attached"))?;
    Ok("lsm/bprm_check_security".into())
}

/// The cgroup connect programs, as attached at the root of cgroup v2 (so every process of the
/// host passes them): what a session denied the network is refused by.
pub(super) struct ConnectHooks {
    root: std::fs::File,
    links: Vec<(&'static str, CgroupSockAddrLinkId)>,
}

impl ConnectHooks {
    const PROGRAMS: [&'static str; 4] = [
        "vigil_connect4",
        "vigil_connect6",
        "vigil_sendmsg4",
        "vigil_sendmsg6",
    ];

    /// The empty programs on the datagram hooks: the mechanism's floor (see
    /// `FloorProgram`).
    pub(super) const FLOOR_PROGRAMS: [&'static str; 2] =
        ["vigil_floor_sendmsg4", "vigil_floor_sendmsg6"];

    /// Attaches the connect and datagram hooks, or says why not.
    fn attach(ebpf: &mut Ebpf) -> Result<ConnectHooks, MechanismError> {
        Self::attach_programs(ebpf, &Self::PROGRAMS)
    }

    /// Attaches `programs` at the root of cgroup v2, or says why not.
    pub(super) fn attach_programs(
        ebpf: &mut Ebpf,
        programs: &[&'static str],
    ) -> Result<ConnectHooks, MechanismError> {
        let mut hooks = ConnectHooks {
            root: cgroup2_root()?,
            links: Vec::new(),
        };
        for &name in programs {
            let prog = connect_program(ebpf, name)?;
            prog.load().map_err(program_error(name, "refused"))?;
            hooks.attach_one(prog, name)?;
        }
        Ok(hooks)
    }

    fn attach_one(
        &mut self,
        prog: &mut CgroupSockAddr,
        name: &'static str,
    ) -> Result<(), MechanismError> {
        // A link (kernels from 5.7) takes no flags and never displaces other programs there:
        // `Single` is what asks for no flags.
        let link = prog
            .attach(&self.root, CgroupAttachMode::Single)
            .map_err(program_error(name, "not attached"))?;
        self.links.push((name, link));
        Ok(())
    }

    /// The hooks, as `cgroup/connect4`.
    pub(super) fn names(&self) -> Vec<String> {
        self.links
            .iter()
            .map(|(name, _)| format!("cgroup/{}", &name["vigil_".len()..]))
            .collect()
    }

    /// Whether `program` is one of these hooks' programs.
    pub(super) fn holds(&self, program: &str) -> bool {
        self.links.iter().any(|(name, _)| *name == program)
    }

    /// Lets go of `program`'s link (detached, or running another program since) and attaches
    /// the program again: the old link, released, takes whatever was put in its place with it.
    pub(super) fn reattach(&mut self, ebpf: &mut Ebpf, program: &str) -> Result<(), String> {
        let Some(at) = self.links.iter().position(|(name, _)| *name == program) else {
            return Err(format!("{program} is not a connect hook"));
        };
        let (name, old) = self.links.swap_remove(at);
        let prog = connect_program(ebpf, name).map_err(|e| e.to_string())?;
        // Closing the fd is all a detach of an fd link does; it cannot fail in a way that
        // matters here (the link is no longer what it was either way).
        let _ = prog.detach(old);
        self.attach_one(prog, name).map_err(|e| e.to_string())
    }
}

fn connect_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, MechanismError> {
    ebpf.program_mut(name)
        .ok_or(MechanismError::Missing(name))?
        .try_into()
        .map_err(program_error(name, "not a cgroup sock_addr program"))
}

fn program_error(
    program: &'static str,
    what: &'static str,
) -> impl Fn(aya::programs::ProgramError) -> MechanismError {
    move |source| MechanismError::Program {
        program,
        what,
        source,
    }
}
