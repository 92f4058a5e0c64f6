//! The kernel object's stack, checked the way the verifier checks it where a kernel gives
//! tracing programs no private stack: a program and every chain of subprograms it calls share
//! [`MAX_BPF_STACK`] bytes. Kernels from 6.13 may give large frames a private stack and accept
//! more, so loading on one of those proves nothing about the others (a frame that grew past the
//! budget once loaded on one machine of this kind and was refused on the next). This test reads
//! the embedded object instead.
//!
//! Each function's depth is the deepest stack slot it touches (`r10 - n` in a load or store,
//! or a pointer `r10 - n` handed to a helper), rounded up as the interpreter does (32 bytes; the
//! JIT rounds to 16). Calls are `BPF_PSEUDO_CALL`s, resolved through their relocations.

use std::collections::{BTreeMap, BTreeSet};

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SymbolKind};

/// `MAX_BPF_STACK` of include/linux/filter.h.
const MAX_BPF_STACK: u64 = 512;
const FRAME_POINTER: u8 = 10;

/// A function: its section and byte range there.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Function {
    /// `SectionIndex.0`: the index type is not ordered.
    section: usize,
    start: u64,
}

struct Analysis {
    names: BTreeMap<Function, String>,
    depth: BTreeMap<Function, u64>,
    calls: BTreeMap<Function, BTreeSet<Function>>,
    programs: Vec<Function>,
}

fn analyse(elf: &[u8]) -> Analysis {
    let file = object::File::parse(elf).expect("the embedded kernel object parses");
    let mut ranges: BTreeMap<Function, u64> = BTreeMap::new();
    let mut names = BTreeMap::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let Some(section) = sym.section_index() else {
            continue;
        };
        let f = Function {
            section: section.0,
            start: sym.address(),
        };
        ranges.insert(f, sym.size());
        names.insert(f, sym.name().unwrap_or("?").to_string());
    }
    let function_at = |section: usize, byte: u64| -> Option<Function> {
        ranges
            .iter()
            .find(|(f, size)| f.section == section && f.start <= byte && byte < f.start + **size)
            .map(|(f, _)| *f)
    };
    let mut depth = BTreeMap::new();
    let mut calls: BTreeMap<Function, BTreeSet<Function>> = BTreeMap::new();
    for section in file.sections() {
        let Ok(data) = section.data() else { continue };
        let relocations: BTreeMap<u64, RelocationTarget> = section
            .relocations()
            .map(|(offset, r)| (offset, r.target()))
            .collect();
        for (f, size) in ranges
            .iter()
            .filter(|(f, _)| f.section == section.index().0)
        {
            let code = &data[f.start as usize..(f.start + size) as usize];
            let mut deepest = 0u64;
            // Registers holding r10 plus a constant, and that constant.
            let mut frame_copies = [None::<i64>; 11];
            for (i, insn) in code.chunks_exact(8).enumerate() {
                let op = insn[0];
                let dst = insn[1] & 0x0f;
                let src = insn[1] >> 4;
                let off = i16::from_le_bytes([insn[2], insn[3]]) as i64;
                let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]) as i64;
                let class = op & 0x07;
                let mut touch = |d: i64| {
                    if d < 0 {
                        deepest = deepest.max(d.unsigned_abs());
                    }
                };
                match class {
                    // LDX: src is the base.
                    0x01 if src == FRAME_POINTER => touch(off),
                    // ST, STX: dst is the base.
                    0x02 | 0x03 if dst == FRAME_POINTER => touch(off),
                    _ => {}
                }
                if let (0x01, Some(k)) = (class, frame_copies.get(src as usize).copied().flatten())
                {
                    touch(k + off);
                }
                if let (0x02 | 0x03, Some(k)) =
                    (class, frame_copies.get(dst as usize).copied().flatten())
                {
                    touch(k + off);
                }
                let dst_slot = dst as usize;
                match op {
                    // mov64 dst, r10
                    0xbf if src == FRAME_POINTER => frame_copies[dst_slot] = Some(0),
                    // mov64 dst, src (another copy)
                    0xbf => frame_copies[dst_slot] = frame_copies[src as usize],
                    // add64 dst, imm
                    0x07 => {
                        if let Some(k) = frame_copies[dst_slot] {
                            frame_copies[dst_slot] = Some(k + imm);
                            touch(k + imm);
                        }
                    }
                    // call: helpers clobber r0..r5; a subprogram call is recorded.
                    0x85 => {
                        for r in frame_copies.iter_mut().take(6) {
                            *r = None;
                        }
                        if src == 1 {
                            let at = f.start + 8 * i as u64;
                            let target = match relocations.get(&at) {
                                Some(RelocationTarget::Symbol(index)) => {
                                    let sym = file.symbol_by_index(*index).expect("symbol");
                                    sym.section_index().and_then(|s| {
                                        function_at(
                                            s.0,
                                            (sym.address() as i64 + (imm + 1) * 8) as u64,
                                        )
                                    })
                                }
                                _ => function_at(
                                    section.index().0,
                                    (at as i64 + (imm + 1) * 8) as u64,
                                ),
                            };
                            let target = target.expect("every subprogram call resolves");
                            calls.entry(*f).or_default().insert(target);
                        }
                    }
                    _ => {
                        // Any other write of dst ends what it held.
                        if matches!(class, 0x04 | 0x07 | 0x00 | 0x01) && dst_slot < 11 {
                            frame_copies[dst_slot] = None;
                        }
                    }
                }
            }
            depth.insert(*f, deepest);
        }
    }
    let text = file.section_by_name(".text").map(|s| s.index().0);
    let programs = ranges
        .keys()
        .filter(|f| Some(f.section) != text)
        .copied()
        .collect();
    Analysis {
        names,
        depth,
        calls,
        programs,
    }
}

impl Analysis {
    /// The deepest chain from `f`: its bytes and the functions on it.
    fn chain(&self, f: Function, seen: &mut Vec<Function>) -> (u64, Vec<String>) {
        let own = self.depth.get(&f).copied().unwrap_or(0).max(1).div_ceil(32) * 32;
        let here = format!("{} ({own})", self.names[&f]);
        if seen.contains(&f) {
            panic!("recursion through {here}: the verifier refuses it");
        }
        seen.push(f);
        let mut best = (0, Vec::new());
        for callee in self.calls.get(&f).into_iter().flatten() {
            let c = self.chain(*callee, seen);
            if c.0 > best.0 {
                best = c;
            }
        }
        seen.pop();
        let mut names = vec![here];
        names.extend(best.1);
        (own + best.0, names)
    }
}

#[test]
fn every_program_and_its_deepest_call_chain_fit_one_stack() {
    let analysis = analyse(super::loader::KERNEL_OBJECT);
    assert!(
        analysis.programs.len() >= 10,
        "the object's programs were found"
    );
    let mut over = Vec::new();
    for program in &analysis.programs {
        let (bytes, chain) = analysis.chain(*program, &mut Vec::new());
        if bytes > MAX_BPF_STACK {
            over.push(format!("{bytes} bytes: {}", chain.join(" -> ")));
        }
    }
    assert!(
        over.is_empty(),
        "over the {MAX_BPF_STACK}-byte stack kernels without private stacks allow:\n{}",
        over.join("\n")
    );
}

/// The analysis itself: the syscall exit program calls subprograms, and its own frame is seen.
#[test]
fn the_analysis_sees_frames_and_calls() {
    let analysis = analyse(super::loader::KERNEL_OBJECT);
    let exit = analysis
        .programs
        .iter()
        .find(|f| analysis.names[f] == "vigil_sys_exit")
        .copied()
        .expect("vigil_sys_exit");
    assert!(
        analysis.depth[&exit] >= 64,
        "its frame holds the open's state"
    );
    assert!(
        analysis.calls.get(&exit).is_some_and(|c| c.len() >= 3),
        "it calls the connect, terminal and fold subprograms"
    );
    let (bytes, chain) = analysis.chain(exit, &mut Vec::new());
    assert!(
        chain.len() >= 2 && bytes > analysis.depth[&exit],
        "{chain:?}"
    );
}

/// No program calls the memory builtins bpf-linker exports (`memset`, `memcpy`, ...): in BPF they
/// are byte-at-a-time loops, and a zeroed struct on the open path cost one (see
/// `monitor-ebpf/build.rs`). Zeroing and copying are expanded into word loads and stores.
#[test]
fn no_program_calls_a_byte_loop_memory_builtin() {
    let analysis = analyse(super::loader::KERNEL_OBJECT);
    let builtins = ["memset", "memcpy", "memmove", "memcmp", "bcmp"];
    let mut calling = Vec::new();
    for (caller, callees) in &analysis.calls {
        for callee in callees {
            let name = &analysis.names[callee];
            if builtins.contains(&name.as_str()) {
                calling.push(format!("{} calls {name}", analysis.names[caller]));
            }
        }
    }
    assert!(calling.is_empty(), "{}", calling.join("\n"));
}
