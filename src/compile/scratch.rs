//! Where a compile's build trees go (`compile --scratch`): a private tmpfs per package when
//! memory allows (nothing of a build tree touches the disk, and it is all freed at once when the
//! package's sandbox ends), else the work dir's disk. See docs/DECISIONS.md, "Build trees on a
//! private tmpfs".

use crate::sandbox::ScratchSpace;

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScratchChoice {
    /// A tmpfs when it can be had, of at most half the available memory over all the packages
    /// compiled at once; disk otherwise.
    Auto,
    Tmpfs,
    Disk,
}

/// A tmpfs smaller than this is not worth trying for `auto`: most builds would outgrow it and
/// run twice.
pub const MIN_AUTO_TMPFS: u64 = 256 << 20;

/// The scratch space of every package of a compile, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScratchDecision {
    pub space: ScratchSpace,
    pub why: String,
}

/// What the compile's packages get. `size` is an explicit per-package tmpfs size; `available`
/// the host's available memory (`MemAvailable`), when known.
pub fn decide(
    choice: ScratchChoice,
    size: Option<u64>,
    workers: usize,
    keep_sandbox: bool,
    memory_limit: Option<i64>,
    available: Option<u64>,
) -> Result<ScratchDecision, String> {
    let disk = |why: &str| {
        Ok(ScratchDecision {
            space: ScratchSpace::Disk,
            why: why.to_string(),
        })
    };
    match choice {
        ScratchChoice::Disk => return disk("build trees on disk (--scratch disk)"),
        ScratchChoice::Tmpfs if keep_sandbox => {
            return Err("--keep-sandbox keeps a failed package's build tree for `fissile-oci shell`, which needs it on disk: use --scratch disk (or auto)".into())
        }
        ScratchChoice::Auto if keep_sandbox => {
            return disk("build trees on disk: --keep-sandbox keeps them for `fissile-oci shell`")
        }
        ScratchChoice::Auto if memory_limit.is_some() => {
            return disk("build trees on disk: a tmpfs would count against --memory (--scratch tmpfs to have it anyway)")
        }
        _ => {}
    }
    let workers = workers.max(1) as u64;
    let (size, whence) = match (size, available) {
        (Some(size), _) => (size, "--scratch-size".to_string()),
        (None, Some(available)) => (
            available / 2 / workers,
            format!(
                "half of the {} of available memory over {workers} at a time",
                human(available)
            ),
        ),
        (None, None) if choice == ScratchChoice::Auto => {
            return disk("build trees on disk: the available memory is unknown (no MemAvailable in /proc/meminfo)")
        }
        (None, None) => {
            return Err("cannot size the build trees' tmpfs: the available memory is unknown; give --scratch-size".into())
        }
    };
    if choice == ScratchChoice::Auto && size < MIN_AUTO_TMPFS {
        return disk(&format!(
            "build trees on disk: a tmpfs of {} ({whence}) is too small to be worth trying",
            human(size)
        ));
    }
    Ok(ScratchDecision {
        space: ScratchSpace::Tmpfs { size },
        why: format!(
            "build trees on a tmpfs of up to {} per package ({whence}); a package that outgrows it is compiled again on disk",
            human(size)
        ),
    })
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn mem_available() -> Option<u64> {
    let meminfo = fs_err::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&meminfo)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `3.7 GiB`, `512 MiB`.
pub fn human(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn space(result: Result<ScratchDecision, String>) -> ScratchSpace {
        result.unwrap().space
    }

    #[test]
    fn auto_takes_half_the_available_memory_over_the_workers() {
        let d = decide(ScratchChoice::Auto, None, 2, false, None, Some(16 * GIB)).unwrap();
        assert_eq!(d.space, ScratchSpace::Tmpfs { size: 4 * GIB });
        assert!(d.why.contains("4.0 GiB per package"), "{}", d.why);
        assert_eq!(
            space(decide(
                ScratchChoice::Auto,
                None,
                8,
                false,
                None,
                Some(16 * GIB)
            )),
            ScratchSpace::Tmpfs { size: GIB }
        );
    }

    #[test]
    fn auto_goes_to_disk_where_a_tmpfs_does_not_fit_the_run() {
        for (workers, keep, memory, available) in [
            (64, false, None, Some(16 * GIB)),
            (2, true, None, Some(16 * GIB)),
            (2, false, Some(1 << 30), Some(16 * GIB)),
            (2, false, None, None),
        ] {
            assert_eq!(
                space(decide(
                    ScratchChoice::Auto,
                    None,
                    workers,
                    keep,
                    memory,
                    available
                )),
                ScratchSpace::Disk,
                "{workers} {keep} {memory:?} {available:?}"
            );
        }
    }

    #[test]
    fn explicit_choices_and_sizes_win() {
        assert_eq!(
            space(decide(
                ScratchChoice::Disk,
                None,
                2,
                false,
                None,
                Some(16 * GIB)
            )),
            ScratchSpace::Disk
        );
        assert_eq!(
            space(decide(
                ScratchChoice::Tmpfs,
                Some(64 << 20),
                2,
                false,
                Some(1),
                None
            )),
            ScratchSpace::Tmpfs { size: 64 << 20 }
        );
        assert_eq!(
            space(decide(
                ScratchChoice::Auto,
                Some(GIB),
                64,
                false,
                None,
                Some(GIB)
            )),
            ScratchSpace::Tmpfs { size: GIB }
        );
        assert!(decide(ScratchChoice::Tmpfs, None, 2, true, None, Some(16 * GIB)).is_err());
        assert!(decide(ScratchChoice::Tmpfs, None, 2, false, None, None).is_err());
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let meminfo =
            "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   16000000 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(16_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert!(mem_available().is_some(), "this host has /proc/meminfo");
    }
}
