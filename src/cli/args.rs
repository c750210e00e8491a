//! Arguments several subcommands share, and their parsers.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use fissile_oci::base;
use fissile_oci::compile::scratch::ScratchChoice;
use fissile_oci::extract::ExtractLimits;
use fissile_oci::plan::PlanRequest;
use fissile_oci::release::LoadOptions;
use fissile_oci::sandbox::Network;

/// Where releases come from and how they are read; shared by every command that takes releases.
#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// Release paths (tarball, dev release dir, source dir, or compiled release)
    #[arg(value_name = "RELEASE")]
    pub releases: Vec<PathBuf>,
    /// Release paths, comma-separated (fissile's spelling; adds to the positional ones)
    #[arg(
        short = 'r',
        long = "release",
        value_name = "PATHS",
        value_delimiter = ','
    )]
    pub release_flag: Vec<PathBuf>,
    /// Dev releases: the bosh CLI's blob cache holding package and job archives
    #[arg(
        long,
        short = 'c',
        visible_alias = "cache-dir",
        value_name = "DIR",
        env = "BOSH_CACHE_DIR"
    )]
    pub bosh_cache: Option<PathBuf>,
    /// Dev releases: read this version instead of the latest (e.g. 3+dev.2)
    #[arg(long, value_name = "VERSION")]
    pub release_version: Option<String>,
    /// Compile only what these instance groups' jobs need (fissile role manifest)
    #[arg(
        short = 'm',
        long = "role-manifest",
        value_name = "FILE",
        env = "FISSILE_OCI_ROLE_MANIFEST"
    )]
    pub role_manifest: Option<PathBuf>,
    /// With -m: only these instance groups (by name, comma-separated)
    #[arg(
        long,
        value_name = "GROUPS",
        value_delimiter = ',',
        requires = "role_manifest"
    )]
    pub roles: Option<Vec<String>>,
    /// Only these releases (by name, comma-separated)
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        env = "FISSILE_OCI_ONLY_RELEASES"
    )]
    pub only_releases: Option<Vec<String>>,
    /// Refuse archives that unpack to more than this (e.g. 64G, 500M); guards against bombs
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = parse_size)]
    pub max_unpacked_size: u64,
}

impl ReleaseArgs {
    pub fn paths(&self) -> Vec<PathBuf> {
        self.releases
            .iter()
            .chain(self.release_flag.iter())
            .cloned()
            .collect()
    }

    pub fn limits(&self) -> ExtractLimits {
        ExtractLimits {
            max_unpacked_bytes: self.max_unpacked_size,
            ..ExtractLimits::default()
        }
    }

    pub fn load_options(&self) -> LoadOptions {
        let mut options = LoadOptions::new(
            self.bosh_cache
                .clone()
                .unwrap_or_else(LoadOptions::default_bosh_cache),
        );
        options.release_version = self.release_version.clone();
        options.limits = self.limits();
        options
    }

    /// The plan request for these arguments (`paths` and `load` must outlive it).
    pub fn plan_request<'a>(
        &'a self,
        paths: &'a [PathBuf],
        load: &'a LoadOptions,
    ) -> PlanRequest<'a> {
        PlanRequest {
            paths,
            load,
            role_manifest: self.role_manifest.as_deref(),
            roles: self.roles.as_deref(),
            only_releases: self.only_releases.as_deref(),
        }
    }
}

#[derive(Args, Debug)]
pub struct PrerequisitesArgs {
    /// Bash script run on the base to make the compilation base [default: built-in, creates
    /// /var/vcap and checks for compile tools]
    #[arg(long, value_name = "SCRIPT", env = "FISSILE_OCI_PREREQUISITES")]
    pub prerequisites: Option<PathBuf>,
}

impl PrerequisitesArgs {
    pub fn script(&self) -> anyhow::Result<String> {
        match &self.prerequisites {
            None => Ok(base::DEFAULT_PREREQUISITES.to_string()),
            Some(path) => fs_err::read_to_string(path)
                .with_context(|| format!("cannot read prerequisites script {}", path.display())),
        }
    }
}

/// How to reach registries, with skopeo's and podman's flags.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Verify registries' TLS certificates; `--tls-verify=false` also lets a registry answer in
    /// plain http
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub tls_verify: bool,
    /// CA certificates (*.crt) to trust and a client certificate (NAME.cert + NAME.key) for
    /// registries [default: /etc/containers/certs.d/HOST:PORT, /etc/docker/certs.d/HOST:PORT]
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Registry credentials (auth.json) [default: $REGISTRY_AUTH_FILE, else
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json,
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json, with their credential helpers]
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

impl RegistryArgs {
    /// A registry client with these settings, remembering blob locations in the work dir.
    pub fn client(
        &self,
        wd: &fissile_oci::workdir::WorkDir,
        printer: super::Printer,
    ) -> anyhow::Result<fissile_oci::registry::Client> {
        if let Some(dir) = &self.cert_dir {
            anyhow::ensure!(
                dir.is_dir(),
                "--cert-dir {}: not a directory",
                dir.display()
            );
        }
        if let Some(file) = &self.authfile {
            anyhow::ensure!(
                file.is_file(),
                "--authfile {}: no such file",
                file.display()
            );
        }
        let options = fissile_oci::registry::ClientOptions {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            auth_file: self.authfile.clone(),
            blob_locations: Some(wd.root().join("blob-locations.json")),
            ..Default::default()
        };
        Ok(fissile_oci::registry::Client::new(options)?.with_notifier(move |m| printer.warn(m)))
    }

    /// A client for the shared cache: it is an optimisation, so a registry that does not
    /// answer is given up on quickly (fewer retries, shorter timeouts) and compiles go on
    /// here; no blob locations are recorded (every package's layer is its own).
    pub fn cache_client(
        &self,
        wd: &fissile_oci::workdir::WorkDir,
        printer: super::Printer,
    ) -> anyhow::Result<fissile_oci::registry::Client> {
        let full = self.client(wd, printer)?;
        let mut options = full.options().clone();
        options.blob_locations = None;
        options.retries = 2;
        options.backoff = std::time::Duration::from_millis(250);
        options.connect_timeout = std::time::Duration::from_secs(10);
        options.io_timeout = std::time::Duration::from_secs(60);
        // Retries are worth a line each on a push or pull the user asked for; here, the one
        // notice that the cache failed says it.
        Ok(fissile_oci::registry::Client::new(options)?)
    }
}

/// The fleet's shared cache: `--cache`, `--cache-mode`, `--cache-required`.
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Share compiled packages through this registry repository (HOST[:PORT]/REPO): each
    /// package is looked up there before it compiles and pulled if found, and pushed after it
    /// compiles; the compilation base too, so every runner compiles on the same one
    #[arg(long, value_name = "REGISTRY/REPO", env = "FISSILE_OCI_CACHE")]
    pub cache: Option<String>,
    /// read: only pull from the shared cache; readwrite: also push what this run compiles
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value_t = CacheModeArg::Readwrite,
        env = "FISSILE_OCI_CACHE_MODE"
    )]
    pub cache_mode: CacheModeArg,
    /// Exit 125 when the shared cache fails, instead of compiling here with a warning
    #[arg(long, env = "FISSILE_OCI_CACHE_REQUIRED")]
    pub cache_required: bool,
}

/// `--cache-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CacheModeArg {
    Read,
    Readwrite,
}

impl CacheArgs {
    /// The shared cache these flags ask for, reached with `registry`'s TLS and credentials;
    /// `None` without `--cache`.
    pub fn open(
        &self,
        registry: &RegistryArgs,
        wd: &fissile_oci::workdir::WorkDir,
        printer: super::Printer,
    ) -> anyhow::Result<Option<fissile_oci::shared_cache::SharedCache>> {
        use fissile_oci::shared_cache::{CacheMode, SharedCache};
        let Some(cache) = self.cache.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let written = cache.strip_prefix("docker://").unwrap_or(cache);
        let reference = fissile_oci::registry::Reference::parse(written)
            .with_context(|| format!("--cache {cache}: write REGISTRY[:PORT]/REPOSITORY"))?;
        anyhow::ensure!(
            reference.tag.is_none() && reference.digest.is_none(),
            "--cache {cache}: name a repository, without a tag or digest (each package gets its own tag)"
        );
        let client = registry.cache_client(wd, printer)?;
        let notify = super::compile::notifier(printer);
        Ok(Some(SharedCache::new(
            client,
            reference.repository,
            match self.cache_mode {
                CacheModeArg::Read => CacheMode::Read,
                CacheModeArg::Readwrite => CacheMode::ReadWrite,
            },
            self.cache_required,
            notify,
        )))
    }
}

/// `--network`: none (loopback only) or host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    None,
    Host,
}

impl From<NetworkArg> for Network {
    fn from(arg: NetworkArg) -> Network {
        match arg {
            NetworkArg::None => Network::None,
            NetworkArg::Host => Network::Host,
        }
    }
}

/// Where compiles put package build trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScratchArg {
    /// A private tmpfs per package when memory allows, disk otherwise
    Auto,
    /// A private tmpfs per package
    Tmpfs,
    /// The work dir's disk
    Disk,
}

impl From<ScratchArg> for ScratchChoice {
    fn from(arg: ScratchArg) -> ScratchChoice {
        match arg {
            ScratchArg::Auto => ScratchChoice::Auto,
            ScratchArg::Tmpfs => ScratchChoice::Tmpfs,
            ScratchArg::Disk => ScratchChoice::Disk,
        }
    }
}

/// A memory limit in bytes as the sandbox takes it: the kernel's limits are signed 64-bit, and
/// a size past `i64::MAX` (8 EiB) means no limit worth the name, so it is clamped, never wrapped
/// to a negative number.
pub fn memory_limit(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// `123`, `10K`, `500M`, `64G`, `1T` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, factor) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let factor: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix {c:?}; use K, M, G or T")),
            };
            (&s[..i], factor)
        }
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 500M or 64G"))?;
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `90s`, `30m`, `36h`, `14d`, `2w`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let factor: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?}; use s, m, h, d or w"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 36h or 14d"))?;
    n.checked_mul(factor)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_clamp_instead_of_wrapping() {
        assert_eq!(memory_limit(1 << 30), 1 << 30);
        assert_eq!(memory_limit(i64::MAX as u64), i64::MAX);
        assert_eq!(memory_limit(i64::MAX as u64 + 1), i64::MAX);
        assert_eq!(memory_limit(u64::MAX), i64::MAX);
        let huge = parse_size("9000000T").unwrap();
        assert!(huge > i64::MAX as u64);
        assert_eq!(
            memory_limit(huge),
            i64::MAX,
            "past 8 EiB: clamped, never negative"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("10K").unwrap(), 10240);
        assert_eq!(parse_size("64G").unwrap(), 64 << 30);
        assert!(parse_size("5X").is_err());
        assert!(parse_size("G").is_err());
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("36h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("d").is_err());
    }
}
