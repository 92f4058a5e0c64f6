//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct member offsets and
//! tracepoint prototypes.
//!
//! Written by hand because aya-obj 0.3 keeps its member lookup private and btf-rs is LGPL, which
//! does not fit a statically linked Apache-2.0 binary. Only what the daemon needs is parsed; the
//! format is documented in the kernel's Documentation/bpf/btf.rst.

use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF data is truncated or malformed: {0}")]
    Malformed(String),
    #[error("BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("BTF struct `{strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
    #[error("BTF member `{strukt}.{member}` is a bitfield, not byte aligned")]
    Bitfield { strukt: String, member: String },
}

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: u32,
    /// `size` for structs, unions, ints; referenced type for pointers, typedefs, modifiers.
    size_or_type: u32,
    members: Vec<Member>,
}

/// Parsed kernel BTF.
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is BTF's implicit `void`.
    types: Vec<Type>,
    structs_by_name: HashMap<String, Vec<u32>>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, BtfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| BtfError::Malformed(format!("read of 2 bytes at {off} past the end")))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("read of 4 bytes at {off} past the end")))
}

impl Btf {
    /// Parses raw BTF (little-endian, as on x86_64 and arm64).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed(
                "bad magic (not little-endian BTF)".into(),
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| start.checked_add(len).map(|end| (start, end)))
                .and_then(|(start, end)| data.get(start..end))
                .ok_or_else(|| BtfError::Malformed(format!("{what} section out of bounds")))
        };
        let type_data = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        let mut types = vec![Type {
            kind: 0,
            name: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut pos = 0usize;
        while pos < type_data.len() {
            let name = u32_at(type_data, pos)?;
            let info = u32_at(type_data, pos + 4)?;
            let size_or_type = u32_at(type_data, pos + 8)?;
            pos += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = pos + i * 12;
                        let raw_offset = u32_at(type_data, m + 8)?;
                        members.push(Member {
                            name: u32_at(type_data, m)?,
                            type_id: u32_at(type_data, m + 4)?,
                            // With kflag the top 8 bits are the bitfield size.
                            bit_offset: if kflag {
                                raw_offset & 0x00ff_ffff
                            } else {
                                raw_offset
                            },
                        });
                    }
                    vlen * 12
                }
                KIND_FUNC_PROTO => {
                    // The parameters, kept as members (name, type) to describe a function.
                    for i in 0..vlen {
                        let m = pos + i * 8;
                        members.push(Member {
                            name: u32_at(type_data, m)?,
                            type_id: u32_at(type_data, m + 4)?,
                            bit_offset: 0,
                        });
                    }
                    vlen * 8
                }
                KIND_ENUM => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                other => {
                    return Err(BtfError::Malformed(format!(
                        "unknown BTF kind {other} at type {}",
                        types.len()
                    )))
                }
            };
            pos += extra;
            if pos > type_data.len() {
                return Err(BtfError::Malformed(
                    "type section ends inside a type".into(),
                ));
            }
            types.push(Type {
                kind,
                name,
                size_or_type,
                members,
            });
        }

        let mut btf = Btf {
            strings,
            types,
            structs_by_name: HashMap::new(),
        };
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                by_name
                    .entry(btf.name(t.name).to_string())
                    .or_default()
                    .push(id as u32);
            }
        }
        btf.structs_by_name = by_name;
        Ok(btf)
    }

    pub fn from_kernel() -> Result<Btf, crate::kernel::PreflightError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|source| crate::kernel::PreflightError::NoBtf {
            path: path.into(),
            source,
        })?;
        Btf::parse(&data).map_err(crate::kernel::PreflightError::BadBtf)
    }

    fn name(&self, off: u32) -> &str {
        let start = off as usize;
        let Some(rest) = self.strings.get(start..) else {
            return "";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset of `member` inside the struct/union `t`, looking through anonymous
    /// struct/union members (`mm_struct` keeps `arg_start` in one).
    fn find_member(&self, t: &Type, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name != 0 {
                if self.name(m.name) == member {
                    return Some(m.bit_offset);
                }
            } else if let Some(inner) = self.resolve(m.type_id) {
                if matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                    if let Some(off) = self.find_member(inner, member, depth + 1) {
                        return Some(m.bit_offset + off);
                    }
                }
            }
        }
        None
    }

    /// Byte offset of `member` in `struct strukt`.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let ids = self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        // Several definitions of one name are possible (rare in vmlinux); take the first that has
        // the member, skipping empty forward-like definitions.
        for &id in ids {
            let t = &self.types[id as usize];
            if let Some(bits) = self.find_member(t, member, 0) {
                if bits % 8 != 0 {
                    return Err(BtfError::Bitfield {
                        strukt: strukt.into(),
                        member: member.into(),
                    });
                }
                return Ok(bits / 8);
            }
        }
        Err(BtfError::NoMember {
            strukt: strukt.into(),
            member: member.into(),
        })
    }

    /// Whether `struct strukt` exists.
    pub fn has_struct(&self, strukt: &str) -> bool {
        self.structs_by_name.contains_key(strukt)
    }

    /// Whether the kernel has function `name` (a BTF `FUNC`, which an fexit program can attach
    /// to).
    pub fn has_function(&self, name: &str) -> bool {
        self.function(name).is_some()
    }

    /// Function `name`'s signature as C-like text: `long int (const struct pt_regs *)`. `None`
    /// when the kernel's BTF has no such function.
    pub fn function_signature(&self, name: &str) -> Option<String> {
        let func = self.function(name)?;
        let proto = self.types.get(func.size_or_type as usize)?;
        let params: Vec<String> = proto
            .members
            .iter()
            .map(|p| self.type_text(p.type_id, 0))
            .collect();
        Some(format!(
            "{} ({})",
            self.type_text(proto.size_or_type, 0),
            params.join(", ")
        ))
    }

    fn function(&self, name: &str) -> Option<&Type> {
        self.types
            .iter()
            .find(|t| t.kind == KIND_FUNC && self.name(t.name) == name)
    }

    /// A type as C-like text, through pointers and qualifiers (typedefs by their name).
    fn type_text(&self, id: u32, depth: u32) -> String {
        let Some(t) = self.types.get(id as usize).filter(|_| depth < 16) else {
            return "?".into();
        };
        match t.kind {
            0 => "void".into(),
            KIND_PTR => format!("{} *", self.type_text(t.size_or_type, depth + 1)),
            KIND_CONST => format!("const {}", self.type_text(t.size_or_type, depth + 1)),
            KIND_VOLATILE => format!("volatile {}", self.type_text(t.size_or_type, depth + 1)),
            KIND_RESTRICT | KIND_TYPE_TAG => self.type_text(t.size_or_type, depth + 1),
            KIND_STRUCT => format!("struct {}", self.name(t.name)),
            KIND_UNION => format!("union {}", self.name(t.name)),
            _ => self.name(t.name).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `struct inner { int a; int b; }` and
    /// `struct outer { int x; struct { int y; struct inner in; }; }`.
    fn sample() -> Vec<u8> {
        let mut strings = b"\0int\0a\0b\0inner\0outer\0x\0y\0in\0".to_vec();
        let s = |name: &str, strings: &mut Vec<u8>| -> u32 {
            let needle = format!("\0{name}\0");
            let pos = strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .expect("string present");
            let _ = strings.len();
            (pos + 1) as u32
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        let int = s("int", &mut strings);
        // 1: int
        push(&[int, KIND_INT << 24, 4, 32]);
        // 2: struct inner { a@0, b@32 }
        push(&[s("inner", &mut strings), KIND_STRUCT << 24 | 2, 8]);
        push(&[s("a", &mut strings), 1, 0, s("b", &mut strings), 1, 32]);
        // 3: anonymous struct { y@0, in@32 }
        push(&[0, KIND_STRUCT << 24 | 2, 12]);
        push(&[s("y", &mut strings), 1, 0, s("in", &mut strings), 2, 32]);
        // 4: typedef to 3 (anonymous members may be reached through typedefs too)
        push(&[0, KIND_TYPEDEF << 24, 3]);
        // 5: struct outer { x@0, <anon>@64 }
        push(&[s("outer", &mut strings), KIND_STRUCT << 24 | 2, 20]);
        push(&[s("x", &mut strings), 1, 0, 0, 4, 64]);
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_members_through_anonymous_structs() {
        let btf = Btf::parse(&sample()).expect("parses");
        assert_eq!(btf.member_offset("outer", "x").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "y").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "in").unwrap(), 12);
        assert_eq!(btf.member_offset("inner", "b").unwrap(), 4);
        assert!(matches!(
            btf.member_offset("outer", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("missing", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let full = sample();
        for len in 0..full.len() {
            let _ = Btf::parse(&full[..len]);
        }
        assert!(Btf::parse(&full[..30]).is_err());
    }
}
