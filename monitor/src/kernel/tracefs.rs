//! tracefs: finding (or mounting) it, and reading tracepoint record layouts from `format` files.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::PreflightError;

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// A mounted tracefs.
#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

impl Tracefs {
    /// Finds a mounted tracefs; when there is none, mounts it at `/sys/kernel/tracing` (as
    /// `mount -t tracefs` would), since a fresh host often has it unmounted.
    pub fn find_or_mount() -> Result<Tracefs, PreflightError> {
        if let Some(t) = Self::find() {
            return Ok(t);
        }
        let target = Path::new(CANDIDATES[0]);
        nix::mount::mount(
            Some("tracefs"),
            target,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|errno| PreflightError::NoTracefs {
            detail: format!(
                "not mounted, and mounting it at {} failed: {errno}",
                target.display()
            ),
        })?;
        Self::find().ok_or_else(|| PreflightError::NoTracefs {
            detail: format!("mounted at {} but has no events/ folder", target.display()),
        })
    }

    fn find() -> Option<Tracefs> {
        CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("events").is_dir())
            .map(|root| Tracefs { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.root
            .join("events")
            .join(category)
            .join(name)
            .join("id")
            .exists()
    }

    /// The fields of `category/name`, by name.
    pub fn format(
        &self,
        category: &str,
        name: &str,
    ) -> Result<HashMap<String, Field>, PreflightError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text =
            std::fs::read_to_string(&path).map_err(|source| PreflightError::MissingTracepoint {
                tracepoint: format!("{category}/{name}"),
                detail: format!("cannot read {}: {source}", path.display()),
            })?;
        parse_format(&text).map_err(|detail| PreflightError::MissingTracepoint {
            tracepoint: format!("{category}/{name}"),
            detail: format!("{}: {detail}", path.display()),
        })
    }

    /// Offset of one field, with an error naming the tracepoint and field when it is absent.
    pub fn field(&self, category: &str, name: &str, field: &str) -> Result<Field, PreflightError> {
        self.format(category, name)?
            .get(field)
            .copied()
            .ok_or_else(|| PreflightError::MissingTracepoint {
                tracepoint: format!("{category}/{name}"),
                detail: format!("its record has no field `{field}`"),
            })
    }
}

/// Parses the `field:TYPE NAME; offset:N; size:N; signed:N;` lines of a tracefs format file.
pub fn parse_format(text: &str) -> Result<HashMap<String, Field>, String> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for (i, part) in rest.split(';').enumerate() {
            let part = part.trim();
            if i == 0 {
                decl = Some(part);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse::<u32>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse::<u32>().ok();
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            return Err(format!("malformed field line `{line}`"));
        };
        // The name is the declaration's last token, without an array suffix: `char comm[16]`,
        // `__data_loc char[] filename`, `const char * name`.
        let last = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("");
        let name = last.split('[').next().unwrap_or("").to_string();
        if name.is_empty() {
            return Err(format!("field without a name in `{line}`"));
        }
        fields.insert(name, Field { offset, size });
    }
    if fields.is_empty() {
        return Err("no fields".into());
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = "name: sched_process_exec\nID: 365\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:24;\tsize:16;\tsigned:0;\n\tfield:const char * name;\toffset:40;\tsize:8;\tsigned:0;\n\nprint fmt: \"filename=%s\", __get_str(filename)\n";

    #[test]
    fn parses_fields_with_data_loc_arrays_and_pointers() {
        let f = parse_format(EXEC).unwrap();
        assert_eq!(f["filename"], Field { offset: 8, size: 4 });
        assert_eq!(
            f["pid"],
            Field {
                offset: 12,
                size: 4
            }
        );
        assert_eq!(
            f["comm"],
            Field {
                offset: 24,
                size: 16
            }
        );
        assert_eq!(
            f["name"],
            Field {
                offset: 40,
                size: 8
            }
        );
        assert_eq!(f["common_pid"].offset, 4);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_format("").is_err());
        assert!(parse_format("field:int x; offset:zz; size:4;").is_err());
    }
}
