//! What a compile run leaves for people and scripts: fissile's metrics CSV, a DOT graph
//! coloured by status, and the JSON summary of the contract.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::status::PackageStatus;

/// One package's line in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct PackageReport {
    pub name: String,
    pub release: String,
    pub fingerprint: String,
    pub cache_key: String,
    pub status: PackageStatus,
    pub seconds: f64,
    pub layer_digest: Option<String>,
    pub log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub dependencies: Vec<String>,
}

#[derive(Serialize)]
struct Summary<'a> {
    packages: &'a [PackageReport],
    wall_seconds: f64,
}

pub fn write_summary(
    path: &Path,
    packages: &[PackageReport],
    wall_seconds: f64,
) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&Summary {
        packages,
        wall_seconds,
    })
    .map_err(std::io::Error::other)?;
    fs_err::write(path, text + "\n")
}

/// `digraph` of the packages, dependencies pointing at their dependants' prerequisites.
pub fn write_graph(path: &Path, packages: &[PackageReport]) -> std::io::Result<()> {
    let mut out =
        String::from("digraph packages {\n  rankdir=LR;\n  node [shape=box, style=filled];\n");
    for p in packages {
        let colour = match p.status {
            PackageStatus::Compiled => "palegreen",
            PackageStatus::Cached => "lightblue",
            PackageStatus::Imported => "khaki",
            PackageStatus::Failed => "salmon",
            PackageStatus::Skipped | PackageStatus::Cancelled => "lightgrey",
        };
        out.push_str(&format!(
            "  \"{}\" [fillcolor={colour}, tooltip=\"{} {:.1}s\"];\n",
            p.name, p.status, p.seconds
        ));
    }
    for p in packages {
        for d in &p.dependencies {
            out.push_str(&format!("  \"{}\" -> \"{d}\";\n", p.name));
        }
    }
    out.push_str("}\n");
    fs_err::write(path, out)
}

/// Appends fissile/stampy metrics lines: `YYYY-MM-DD HH:MM:SS,fissile,SERIES,start|done`.
pub struct Metrics {
    file: Option<fs_err::File>,
}

impl Metrics {
    /// Metrics that go nowhere.
    pub fn none() -> Metrics {
        Metrics { file: None }
    }

    pub fn open(path: Option<&Path>) -> std::io::Result<Metrics> {
        let file = match path {
            Some(p) => Some(
                fs_err::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => None,
        };
        Ok(Metrics { file })
    }

    pub fn stamp(&mut self, series: &str, event: &str) {
        if let Some(f) = self.file.as_mut() {
            let _ = writeln!(
                f,
                "{},fissile,{},{event}",
                crate::clock::utc_now(),
                csv_field(series)
            );
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lines_have_fissiles_shape() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.csv");
        let mut m = Metrics::open(Some(&path)).unwrap();
        m.stamp("compile-packages::rel/pkg", "start");
        m.stamp("compile-packages::rel/pkg", "done");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let fields: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(fields.len(), 4);
        assert_eq!(fields[0].len(), 19, "{}", fields[0]);
        assert_eq!(
            &fields[1..],
            &["fissile", "compile-packages::rel/pkg", "start"]
        );
    }
}
