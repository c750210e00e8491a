//! How output is shown: data on stdout, progress and notices on stderr, as text or JSON lines.

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug)]
pub struct Printer {
    pub verbose: bool,
    pub quiet: bool,
    pub log_format: LogFormat,
}

impl Printer {
    /// Progress and notices, unless `-q`.
    pub fn info(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }

    /// Detail, with `-v`.
    pub fn detail(&self, message: impl std::fmt::Display) {
        if self.verbose {
            eprintln!("{message}");
        }
    }

    pub fn warn(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("warning: {message}");
        }
    }

    /// A progress callback for long library work: each line prefixed with the seconds since
    /// `started`.
    pub fn progress(self, started: std::time::Instant) -> impl FnMut(&str) {
        move |line: &str| {
            self.info(format_args!(
                "[{:>5.1}s] {line}",
                started.elapsed().as_secs_f64()
            ))
        }
    }
}

/// Bytes for people: `512 B`, `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
