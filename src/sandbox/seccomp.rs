//! The seccomp filter of every sandbox: [`super::security::seccomp_profile`] compiled to BPF
//! with libseccomp, cached in the runtime root, and installed by the container's init as the
//! very last step before `exec` (see `container::SandboxExecutor`).
//!
//! Why not libcontainer's own seccomp support: it compiles the profile with libseccomp inside every
//! container's init, for three architectures, a measurable part of a sandbox's start-up (see
//! docs/DECISIONS.md, "Seccomp compiled once, installed by the container's init"). The compiled
//! program only depends on the profile, the architecture and the libseccomp version, so it is made
//! once per runtime root and then read back; each container only hands it to the kernel. Init has
//! `no_new_privs` set and its capabilities dropped by then, which is what an unprivileged filter
//! load needs; a filter that cannot be installed stops the container before the command runs.
//!
//! Compile-level figure: compiling the filter for every container instead made a 200-package
//! chain of trivial packages 1.045x slower (wall; 1.037x CPU; +0.65 ms per package, `-j 2`, 10
//! rounds of `scripts/bench/compile_ab.py`, BENCHMARKS.md). Small, but the same sign in CPU and
//! wall, and as large as the earlier `run` figure (0.6 ms).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use sha2::{Digest, Sha256};

/// One classic-BPF instruction is 8 bytes; the kernel takes at most 4096 of them.
const INSN_SIZE: usize = 8;
const MAX_INSNS: usize = 4096;

#[derive(thiserror::Error, Debug)]
pub enum SeccompError {
    #[error("the seccomp profile uses {what}, which the filter compiler does not support")]
    Unsupported { what: String },
    #[error("libseccomp failed to compile the filter")]
    Compile(#[source] libseccomp::error::SeccompError),
    #[error("failed to pass the compiled filter through a pipe")]
    Pipe(#[source] std::io::Error),
    #[error("the compiled filter is not a BPF program ({len} bytes)")]
    BadProgram { len: usize },
}

/// A compiled filter: classic BPF, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Clone, Debug)]
pub struct Filter {
    program: Arc<[libc::sock_filter]>,
}

impl Filter {
    fn from_bytes(bytes: &[u8]) -> Result<Filter, SeccompError> {
        if bytes.is_empty() || bytes.len() % INSN_SIZE != 0 || bytes.len() > MAX_INSNS * INSN_SIZE {
            return Err(SeccompError::BadProgram { len: bytes.len() });
        }
        let program = bytes
            .chunks_exact(INSN_SIZE)
            .map(|insn| libc::sock_filter {
                code: u16::from_ne_bytes([insn[0], insn[1]]),
                jt: insn[2],
                jf: insn[3],
                k: u32::from_ne_bytes([insn[4], insn[5], insn[6], insn[7]]),
            })
            .collect();
        Ok(Filter { program })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.program.len()
    }

    /// Installs the filter on the calling thread (and what it execs). Needs `no_new_privs` or
    /// CAP_SYS_ADMIN.
    pub fn install(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel
        // copies them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// The filter for `profile`, from `cache_dir` when an earlier run compiled it, else compiled
/// and stored there for the next ones (best effort: a cache that cannot be written only costs
/// time).
pub fn load_or_compile(profile: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter, SeccompError> {
    let path = cache_path(profile, cache_dir);
    if let Some(bytes) = read_trusted(&path) {
        if let Ok(filter) = Filter::from_bytes(&bytes) {
            return Ok(filter);
        }
    }
    let bytes = compile(profile)?;
    let filter = Filter::from_bytes(&bytes)?;
    store(&path, &bytes);
    Ok(filter)
}

/// The cached program, if it is a regular file of ours that nobody else may write to (the
/// runtime root is checked to be private too; this is the last line).
fn read_trusted(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let mut file = fs_err::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    let ours = meta.uid() == nix::unistd::geteuid().as_raw();
    if !meta.is_file() || !ours || meta.mode() & 0o022 != 0 {
        return None;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// The cache file: named after everything the program depends on.
fn cache_path(profile: &LinuxSeccomp, cache_dir: &Path) -> PathBuf {
    let version = ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(profile).unwrap_or_default());
    hash.update(version.as_bytes());
    hash.update(std::env::consts::ARCH.as_bytes());
    let digest = hex::encode(hash.finalize());
    cache_dir.join(format!("seccomp-{}.bpf", &digest[..16]))
}

fn store(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = fs_err::File::create(&tmp).and_then(|mut file| file.write_all(bytes));
    if written.is_err() || fs_err::rename(&tmp, path).is_err() {
        let _ = fs_err::remove_file(&tmp);
    }
}

/// Compiles the subset of the OCI seccomp profile that `security` writes: a default action,
/// architectures, and rules that fail named syscalls with an errno, optionally when an argument
/// matches under a mask. Anything else is refused rather than approximated.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>, SeccompError> {
    let unsupported = |what: String| SeccompError::Unsupported { what };
    let default = action(profile.default_action(), profile.default_errno_ret())
        .ok_or_else(|| unsupported(format!("default action {:?}", profile.default_action())))?;
    let mut ctx = ScmpFilterContext::new(default).map_err(SeccompError::Compile)?;
    for arch in profile.architectures().iter().flatten() {
        let arch = architecture(*arch).ok_or_else(|| unsupported(format!("arch {arch:?}")))?;
        ctx.add_arch(arch).map_err(SeccompError::Compile)?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())
            .ok_or_else(|| unsupported(format!("action {:?}", rule.action())))?;
        let mut compares = Vec::new();
        for arg in rule.args().iter().flatten() {
            if arg.op() != LinuxSeccompOperator::ScmpCmpMaskedEq {
                return Err(unsupported(format!("argument operator {:?}", arg.op())));
            }
            let mask = arg.value_two().unwrap_or(arg.value());
            compares.push(ScmpArgCompare::new(
                arg.index() as u32,
                ScmpCompareOp::MaskedEqual(mask),
                arg.value(),
            ));
        }
        for name in rule.names() {
            // A syscall this libseccomp does not know cannot be called by name either.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            if compares.is_empty() {
                ctx.add_rule(act, syscall)
            } else {
                ctx.add_rule_conditional(act, syscall, &compares)
            }
            .map_err(SeccompError::Compile)?;
        }
    }
    export(&ctx)
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Option<ScmpAction> {
    match action {
        LinuxSeccompAction::ScmpActAllow => Some(ScmpAction::Allow),
        LinuxSeccompAction::ScmpActErrno => {
            Some(ScmpAction::Errno(errno.map_or(libc::EPERM, |e| e as i32)))
        }
        _ => None,
    }
}

fn architecture(arch: Arch) -> Option<ScmpArch> {
    Some(match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        _ => return None,
    })
}

/// libseccomp 2.5 exports only to a file descriptor: a pipe holds a whole program (32 KiB at
/// most) without blocking.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>, SeccompError> {
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| SeccompError::Pipe(e.into()))?;
    ctx.export_bpf(&write_end).map_err(SeccompError::Compile)?;
    drop(write_end);
    let mut bytes = Vec::new();
    std::fs::File::from(read_end)
        .read_to_end(&mut bytes)
        .map_err(SeccompError::Pipe)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::security::seccomp_profile;

    #[test]
    fn the_profile_compiles_to_a_bpf_program_and_is_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let profile = seccomp_profile();
        let filter = load_or_compile(&profile, tmp.path()).unwrap();
        // Three architectures, ~50 denied syscalls and the namespace-flag checks.
        assert!(filter.len() > 100, "{} instructions", filter.len());
        let cached: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(cached.len(), 1);
        let bytes = std::fs::read(cached[0].path()).unwrap();
        assert_eq!(bytes.len(), filter.len() * INSN_SIZE);
        assert_eq!(
            load_or_compile(&profile, tmp.path()).unwrap().len(),
            filter.len()
        );
    }

    #[test]
    fn a_damaged_cache_is_compiled_again() {
        let tmp = tempfile::tempdir().unwrap();
        let profile = seccomp_profile();
        let path = cache_path(&profile, tmp.path());
        std::fs::write(&path, b"not bpf").unwrap();
        let filter = load_or_compile(&profile, tmp.path()).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            filter.len() * INSN_SIZE
        );
    }

    #[test]
    fn a_cached_program_others_may_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let profile = seccomp_profile();
        let path = cache_path(&profile, tmp.path());
        // A valid program, but not the profile's: it would allow everything.
        let allow_all = 0x7fff_0000u32.to_ne_bytes();
        let mut bytes = vec![0x06, 0, 0, 0];
        bytes.extend_from_slice(&allow_all);
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let filter = load_or_compile(&profile, tmp.path()).unwrap();
        assert!(
            filter.len() > 100,
            "compiled again, not read from the planted file"
        );
    }

    #[test]
    fn anything_outside_the_supported_subset_is_refused() {
        let mut profile = seccomp_profile();
        profile.set_default_action(LinuxSeccompAction::ScmpActTrace);
        assert!(matches!(
            compile(&profile),
            Err(SeccompError::Unsupported { .. })
        ));
    }
}
