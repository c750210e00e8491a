//! Last compile times per package, kept in the work dir: the scheduler's weights for the next
//! run, so the longest chains start first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub(super) struct Timings(HashMap<String, f64>);

impl Timings {
    fn file(logs: &Path) -> PathBuf {
        logs.join("timings.json")
    }

    pub fn load(logs: &Path) -> Timings {
        let map = fs_err::read(Self::file(logs))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Timings(map)
    }

    /// The last time of this very version, else of any version of the package, else 1 s.
    pub fn weight(&self, name: &str, fingerprint: &str) -> f64 {
        self.0
            .get(&format!("{name}/{fingerprint}"))
            .or_else(|| self.0.get(name))
            .copied()
            .unwrap_or(1.0)
            .max(0.001)
    }

    pub fn record(&mut self, name: &str, fingerprint: &str, seconds: f64) {
        self.0.insert(format!("{name}/{fingerprint}"), seconds);
        self.0.insert(name.to_string(), seconds);
    }

    /// Best effort: timings only steer the order of the next run.
    pub fn save(&self, logs: &Path) {
        if let Ok(bytes) = serde_json::to_vec(&self.0) {
            let _ = crate::oci::store::write_atomic(&Self::file(logs), &bytes);
        }
    }
}
