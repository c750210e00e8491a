//! Shell completions and man pages, generated from the clap definition and checked by the real
//! consumers: bash loads the completion, groff renders every page without a warning.

#![allow(clippy::disallowed_methods)]

use std::process::Command;

mod common_cli;
mod common_skip;

use common_cli::{fissile, succeed};

fn generate(what: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = succeed(fissile(tmp.path()).args(["completions", what]));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_loads_the_completion_and_every_shell_gets_the_subcommands() {
    let tmp = tempfile::tempdir().unwrap();
    let bash = tmp.path().join("fissile-oci.bash");
    std::fs::write(&bash, generate("bash")).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p fissile-oci",
            bash.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("fissile-oci"));
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = generate(shell);
        for word in ["compile", "inspect", "work-dir", "keep-going"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        assert!(
            !script.contains("__sandbox-zygote"),
            "{shell}: the helper is internal"
        );
    }
}

#[test]
fn man_pages_render_without_warnings() {
    let main = generate("man");
    assert!(
        main.starts_with(".ie") || main.contains(".TH fissile-oci"),
        "{main}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    succeed(
        fissile(tmp.path())
            .args(["completions", "man", "--dir"])
            .arg(&dir),
    );
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for expected in [
        "fissile-oci.1",
        "fissile-oci-compile.1",
        "fissile-oci-cache-gc.1",
    ] {
        assert!(pages.iter().any(|p| p == expected), "{pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("helper")), "{pages:?}");
    for page in &pages {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join(page))
            .output()
            .expect("groff (Debian groff-base) renders man pages");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
