//! Release source dirs written by the tests: packages with their dependencies and packaging
//! scripts, each with one source file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `dir/name`, a source-directory release: (name, dependencies, packaging script) per package,
/// each with `src/<name>/input.txt` ("source of <name>") as its one file.
pub fn release<P, D, E, S>(dir: &Path, name: &str, packages: &[(P, D, S)]) -> PathBuf
where
    P: AsRef<str>,
    D: AsRef<[E]>,
    E: AsRef<str>,
    S: AsRef<[u8]>,
{
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::write(root.join("config/final.yml"), format!("name: {name}\n")).unwrap();
    for (pkg, deps, script) in packages {
        let pkg = pkg.as_ref();
        let p = root.join("packages").join(pkg);
        std::fs::create_dir_all(&p).unwrap();
        let deps_yaml: String = deps
            .as_ref()
            .iter()
            .map(|d| format!("- {}\n", d.as_ref()))
            .collect();
        std::fs::write(
            p.join("spec"),
            format!("name: {pkg}\ndependencies:\n{deps_yaml}files:\n- {pkg}/**/*\n"),
        )
        .unwrap();
        std::fs::write(p.join("packaging"), script).unwrap();
        std::fs::create_dir_all(root.join("src").join(pkg)).unwrap();
        std::fs::write(
            root.join("src").join(pkg).join("input.txt"),
            format!("source of {pkg}\n"),
        )
        .unwrap();
    }
    root
}
