//! The twins of the fexit programs on the syscall entry functions: each runs the same code
//! ([`crate::syscalls::entry_exit_of`]) as a `tp_btf/sys_exit` program, the same program type
//! with the same context (`struct pt_regs *regs, long ret` there; `const struct pt_regs *regs`,
//! then the result, for an fexit program on a syscall entry function).
//!
//! Never attached. Kernels that refuse fexit (this project's test machines) still put every
//! entry program's code through their verifier this way: a unit test loads each twin. They
//! live in an object of their own so that the daemon's object does not carry them (aya keeps
//! each program's relocated code for the daemon's lifetime: 68 more programs were 12 MiB).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use vigil_common::X86_64_SYSCALL_ENTRIES;

use crate::kernel::{BtfRegs, Ptr};

macro_rules! twins {
    ($($index:literal $name:ident),* $(,)?) => {
        $(
            #[btf_tracepoint(function = "sys_exit")]
            pub fn $name(ctx: BtfTracePointContext) -> i32 {
                let regs = BtfRegs(ctx.arg::<u64>(0) as Ptr);
                crate::syscalls::entry_exit_of::<$index>(regs, ctx.arg(1))
            }
        )*
        const _: () = assert!(
            [$($index),*].len() == X86_64_SYSCALL_ENTRIES.len(),
            "one twin per syscall entry"
        );
    };
}

twins!(
    0 vigil_fxchk_0, 1 vigil_fxchk_1, 2 vigil_fxchk_2, 3 vigil_fxchk_3, 4 vigil_fxchk_4,
    5 vigil_fxchk_5, 6 vigil_fxchk_6, 7 vigil_fxchk_7, 8 vigil_fxchk_8, 9 vigil_fxchk_9,
    10 vigil_fxchk_10, 11 vigil_fxchk_11, 12 vigil_fxchk_12, 13 vigil_fxchk_13, 14 vigil_fxchk_14,
    15 vigil_fxchk_15, 16 vigil_fxchk_16, 17 vigil_fxchk_17, 18 vigil_fxchk_18, 19 vigil_fxchk_19,
    20 vigil_fxchk_20, 21 vigil_fxchk_21, 22 vigil_fxchk_22, 23 vigil_fxchk_23, 24 vigil_fxchk_24,
    25 vigil_fxchk_25, 26 vigil_fxchk_26, 27 vigil_fxchk_27, 28 vigil_fxchk_28, 29 vigil_fxchk_29,
    30 vigil_fxchk_30, 31 vigil_fxchk_31, 32 vigil_fxchk_32, 33 vigil_fxchk_33, 34 vigil_fxchk_34,
    35 vigil_fxchk_35, 36 vigil_fxchk_36, 37 vigil_fxchk_37, 38 vigil_fxchk_38, 39 vigil_fxchk_39,
    40 vigil_fxchk_40, 41 vigil_fxchk_41, 42 vigil_fxchk_42, 43 vigil_fxchk_43, 44 vigil_fxchk_44,
    45 vigil_fxchk_45, 46 vigil_fxchk_46, 47 vigil_fxchk_47, 48 vigil_fxchk_48, 49 vigil_fxchk_49,
    50 vigil_fxchk_50, 51 vigil_fxchk_51, 52 vigil_fxchk_52, 53 vigil_fxchk_53, 54 vigil_fxchk_54,
    55 vigil_fxchk_55, 56 vigil_fxchk_56, 57 vigil_fxchk_57, 58 vigil_fxchk_58, 59 vigil_fxchk_59,
    60 vigil_fxchk_60, 61 vigil_fxchk_61, 62 vigil_fxchk_62, 63 vigil_fxchk_63, 64 vigil_fxchk_64,
    65 vigil_fxchk_65, 66 vigil_fxchk_66, 67 vigil_fxchk_67, 68 vigil_fxchk_68, 69 vigil_fxchk_69,
    70 vigil_fxchk_70, 71 vigil_fxchk_71, 72 vigil_fxchk_72, 73 vigil_fxchk_73, 74 vigil_fxchk_74,
    75 vigil_fxchk_75, 76 vigil_fxchk_76, 77 vigil_fxchk_77, 78 vigil_fxchk_78, 79 vigil_fxchk_79,
    80 vigil_fxchk_80, 81 vigil_fxchk_81, 82 vigil_fxchk_82, 83 vigil_fxchk_83, 84 vigil_fxchk_84,
    85 vigil_fxchk_85, 86 vigil_fxchk_86, 87 vigil_fxchk_87, 88 vigil_fxchk_88, 89 vigil_fxchk_89,
    90 vigil_fxchk_90, 91 vigil_fxchk_91, 92 vigil_fxchk_92, 93 vigil_fxchk_93, 94 vigil_fxchk_94,
    95 vigil_fxchk_95, 96 vigil_fxchk_96, 97 vigil_fxchk_97, 98 vigil_fxchk_98, 99 vigil_fxchk_99,
    100 vigil_fxchk_100, 101 vigil_fxchk_101, 102 vigil_fxchk_102, 103 vigil_fxchk_103, 104 vigil_fxchk_104,
    105 vigil_fxchk_105, 106 vigil_fxchk_106, 107 vigil_fxchk_107, 108 vigil_fxchk_108, 109 vigil_fxchk_109,
);
