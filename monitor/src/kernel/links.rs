//! The daemon's own BPF links as the kernel reports them now, to notice a hook taken away
//! while the program stays loaded.
//!
//! Root cannot unload a program whose fd the daemon holds, but can act on a link: a cgroup link
//! is detached by `BPF_LINK_DETACH` (`bpftool link detach id N`), after which the program stays
//! loaded and runs nowhere, and `BPF_LINK_UPDATE` puts another program of the same type in its
//! place. The other kinds of link the daemon holds (raw and BTF tracepoints, perf events) take
//! neither on the kernels this is tested on (`EOPNOTSUPP`), and are checked all the same.
//!
//! Read from `/proc/self/fdinfo`, by hand: aya's `LinkInfo` has no target (the cgroup), and no
//! crate parses a link's fdinfo. What is read is the kernel's own text
//! (`bpf_link_show_fdinfo` and the link type's `show_fdinfo`), not anything a user names.

use std::{collections::BTreeMap, os::fd::RawFd};

/// One BPF link held by an fd of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLink {
    pub fd: RawFd,
    /// The kernel's id of the link.
    pub id: u32,
    /// The program running there now; `None` if the kernel names none.
    pub prog_id: Option<u32>,
    /// `cgroup`, `raw_tracepoint`, `perf_event`, `tracing`, ...
    pub link_type: String,
    /// For a cgroup link, the cgroup it is attached to: 0 once detached.
    pub cgroup_id: Option<u64>,
}

impl HeldLink {
    /// Parses the fdinfo of `fd`; `None` when it is not a BPF link's.
    pub fn parse(fd: RawFd, fdinfo: &str) -> Option<HeldLink> {
        let fields: BTreeMap<&str, &str> = fdinfo
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        Some(HeldLink {
            fd,
            id: fields.get("link_id")?.parse().ok()?,
            prog_id: fields.get("prog_id").and_then(|v| v.parse().ok()),
            link_type: fields.get("link_type")?.to_string(),
            cgroup_id: fields.get("cgroup_id").and_then(|v| v.parse().ok()),
        })
    }
}

/// Every BPF link this process holds an fd of, by link id.
pub fn held_links() -> std::io::Result<BTreeMap<u32, HeldLink>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // Only links: the fd of read_dir itself, and any closed meanwhile, fail here.
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.as_os_str() == "anon_inode:bpf_link" => {}
            _ => continue,
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue;
        };
        if let Some(link) = HeldLink::parse(fd, &text) {
            out.insert(link.id, link);
        }
    }
    Ok(out)
}

/// How a link the daemon attached differs from what it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// No fd of this process holds it any more.
    Gone,
    /// Detached from its cgroup (its cgroup id is 0 now).
    Detached,
    /// Another program runs there.
    ProgramReplaced { now: Option<u32> },
}

/// The links of `expected` that are not as they were, with how.
pub fn changed<'a>(
    expected: &'a BTreeMap<u32, HeldLink>,
    now: &BTreeMap<u32, HeldLink>,
) -> Vec<(&'a HeldLink, LinkChange)> {
    expected
        .values()
        .filter_map(|was| {
            let change = match now.get(&was.id) {
                None => LinkChange::Gone,
                Some(is) if is.prog_id != was.prog_id => {
                    LinkChange::ProgramReplaced { now: is.prog_id }
                }
                Some(is) if is.cgroup_id != was.cgroup_id => LinkChange::Detached,
                Some(_) => return None,
            };
            Some((was, change))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUP: &str = "pos:\t0\nflags:\t02000000\nmnt_id:\t17\nino:\t1038\nlink_type:\tcgroup\n\
        link_id:\t15943\nprog_tag:\tda71ebb95ba6d373\nprog_id:\t12162\ncgroup_id:\t1\nattach_type:\t10\n";
    const RAW_TP: &str = "pos:\t0\nflags:\t02000000\nlink_type:\traw_tracepoint\nlink_id:\t15942\n\
        prog_tag:\tc56d3f38d54eb006\nprog_id:\t12161\ntp_name:\tsys_exit\ncookie:\t0\n";

    #[test]
    fn reads_the_kernels_fdinfo_of_a_link() {
        let l = HeldLink::parse(61, CGROUP).unwrap();
        assert_eq!(
            l,
            HeldLink {
                fd: 61,
                id: 15943,
                prog_id: Some(12162),
                link_type: "cgroup".into(),
                cgroup_id: Some(1),
            }
        );
        let r = HeldLink::parse(60, RAW_TP).unwrap();
        assert_eq!((r.id, r.cgroup_id), (15942, None));
        // A map's or a program's fdinfo is not a link's.
        assert_eq!(
            HeldLink::parse(3, "pos:\t0\nmap_type:\t27\nmax_entries:\t1\n"),
            None
        );
        assert_eq!(HeldLink::parse(3, ""), None);
    }

    #[test]
    fn a_detached_replaced_or_closed_link_is_a_change_an_unchanged_one_is_not() {
        let cg = HeldLink::parse(61, CGROUP).unwrap();
        let tp = HeldLink::parse(60, RAW_TP).unwrap();
        let expected: BTreeMap<u32, HeldLink> = [(cg.id, cg.clone()), (tp.id, tp.clone())].into();
        assert!(changed(&expected, &expected.clone()).is_empty());

        let mut detached = expected.clone();
        detached.get_mut(&cg.id).unwrap().cgroup_id = Some(0);
        let found = changed(&expected, &detached);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0.id, &found[0].1), (cg.id, &LinkChange::Detached));

        let mut replaced = expected.clone();
        replaced.get_mut(&cg.id).unwrap().prog_id = Some(99);
        assert_eq!(
            changed(&expected, &replaced)[0].1,
            LinkChange::ProgramReplaced { now: Some(99) }
        );

        let mut gone = expected.clone();
        gone.remove(&tp.id);
        assert_eq!(changed(&expected, &gone)[0].1, LinkChange::Gone);
    }

    #[test]
    fn this_process_holds_no_link_and_reading_them_works() {
        // The unit tests attach nothing: the scan runs over every fd and finds none.
        assert!(held_links().unwrap().is_empty());
    }
}
