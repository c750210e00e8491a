//! The package graph across releases: role-manifest filtering, --only-releases, and packages
//! shared between releases compiled once.

#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::ffi::OsStr;

fn order(json: &serde_json::Value) -> Vec<String> {
    json["compile_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn two_releases(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let shared = ArchivePackage::new("openssl", &[]);
    let a = vec![
        shared.clone(),
        ArchivePackage::new("nginx", &["openssl"]),
        ArchivePackage::new("unused", &[]),
    ];
    let mut b_top = ArchivePackage::new("ruby", &["openssl"]);
    b_top.fingerprint = sha1_hex(b"ruby-b");
    let b = vec![shared, b_top];
    let ra = extracted_release(
        dir,
        "web",
        &a,
        &[
            ArchiveJob::new("router", &["nginx"]),
            ArchiveJob::new("idle", &["unused"]),
        ],
    );
    let rb = extracted_release(dir, "app", &b, &[ArchiveJob::new("api", &["ruby"])]);
    (ra, rb)
}

#[test]
fn identical_packages_in_two_releases_compile_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (ra, rb) = two_releases(tmp.path());
    let json = inspect_json(&[ra.as_os_str(), rb.as_os_str()]);
    let o = order(&json);
    assert_eq!(o.iter().filter(|n| *n == "openssl").count(), 1, "{o:?}");
    assert_eq!(o.len(), 4, "{o:?}");
    assert!(o.iter().position(|n| n == "openssl") < o.iter().position(|n| n == "nginx"));
    assert!(o.iter().position(|n| n == "openssl") < o.iter().position(|n| n == "ruby"));
    // Both releases still list their own copy.
    assert_eq!(json["releases"][0]["packages"].as_array().unwrap().len(), 3);
    assert_eq!(json["releases"][1]["packages"].as_array().unwrap().len(), 2);
}

#[test]
fn same_name_different_fingerprint_is_two_units_labelled_by_release() {
    let tmp = tempfile::tempdir().unwrap();
    let mut other = ArchivePackage::new("openssl", &[]);
    other.fingerprint = sha1_hex(b"openssl-3");
    let ra = extracted_release(
        tmp.path(),
        "one",
        &[ArchivePackage::new("openssl", &[])],
        &[],
    );
    let rb = extracted_release(tmp.path(), "two", &[other], &[]);
    let json = inspect_json(&[ra.as_os_str(), rb.as_os_str()]);
    let mut o = order(&json);
    o.sort();
    assert_eq!(o, vec!["one/openssl", "two/openssl"]);
}

#[test]
fn role_manifest_selects_the_closure_of_the_jobs_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let (ra, rb) = two_releases(tmp.path());
    let manifest = tmp.path().join("roles.yml");
    write(
        &manifest,
        b"instance_groups:\n- name: edge\n  jobs:\n  - name: router\n    release: web\n",
        0o644,
    );
    let json = inspect_json(&[
        ra.as_os_str(),
        rb.as_os_str(),
        OsStr::new("-m"),
        manifest.as_os_str(),
    ]);
    assert_eq!(order(&json), vec!["openssl", "nginx"]);
    assert_eq!(json["releases"][1]["packages"].as_array().unwrap().len(), 0);

    // fissile's older spelling.
    write(
        &manifest,
        b"roles:\n- name: api\n  jobs:\n  - name: api\n    release_name: app\n",
        0o644,
    );
    let json = inspect_json(&[
        ra.as_os_str(),
        rb.as_os_str(),
        OsStr::new("--role-manifest"),
        manifest.as_os_str(),
    ]);
    assert_eq!(order(&json), vec!["openssl", "ruby"]);
}

#[test]
fn role_manifest_errors_name_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let (ra, rb) = two_releases(tmp.path());
    let manifest = tmp.path().join("roles.yml");
    for (text, needle) in [
        (
            "instance_groups:\n- name: g\n  jobs:\n  - name: nope\n    release: web\n",
            "has no job \"nope\"",
        ),
        (
            "instance_groups:\n- name: g\n  jobs:\n  - name: router\n    release: ghost\n",
            "\"ghost\", which was not given",
        ),
        (
            "instance_groups:\n- name: g\n  jobs:\n  - name: router\n",
            "does not name its release",
        ),
        ("instance_groups: []\n", "no instance_groups"),
    ] {
        write(&manifest, text.as_bytes(), 0o644);
        let err = inspect_fails(&[
            ra.as_os_str(),
            rb.as_os_str(),
            OsStr::new("-m"),
            manifest.as_os_str(),
        ]);
        assert!(
            err.contains("roles.yml") && err.contains(needle),
            "{needle}: {err}"
        );
    }
}

#[test]
fn only_releases_filters_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (ra, rb) = two_releases(tmp.path());
    let json = inspect_json(&[
        ra.as_os_str(),
        rb.as_os_str(),
        OsStr::new("--only-releases"),
        OsStr::new("app"),
    ]);
    assert_eq!(order(&json), vec!["openssl", "ruby"]);
    let err = inspect_fails(&[
        ra.as_os_str(),
        rb.as_os_str(),
        OsStr::new("--only-releases"),
        OsStr::new("app,nope"),
    ]);
    assert!(
        err.contains("\"nope\"") && err.contains("web, app"),
        "{err}"
    );
}

#[test]
fn same_release_twice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (ra, _) = two_releases(tmp.path());
    let err = inspect_fails(&[ra.as_os_str(), ra.as_os_str()]);
    assert!(err.contains("same name"), "{err}");
}

#[test]
fn compile_order_is_topological_on_a_wide_generated_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pkgs = Vec::new();
    for i in 0..60 {
        let deps: Vec<String> = (0..i)
            .filter(|j| (i * 7 + j * 3) % 5 == 0)
            .map(|j| format!("p{j}"))
            .collect();
        let refs: Vec<&str> = deps.iter().map(String::as_str).collect();
        pkgs.push(ArchivePackage::new(&format!("p{i}"), &refs));
    }
    pkgs.reverse();
    let root = extracted_release(tmp.path(), "wide", &pkgs, &[]);
    let json = inspect_json(&[root.as_os_str()]);
    let o = order(&json);
    assert_eq!(o.len(), 60);
    for p in &pkgs {
        let at = o.iter().position(|n| *n == p.name).unwrap();
        for d in &p.dependencies {
            assert!(
                o.iter().position(|n| n == d).unwrap() < at,
                "{d} must come before {}",
                p.name
            );
        }
    }
}

#[test]
fn each_instance_group_gets_the_closure_of_its_own_jobs() {
    use fissile_oci::plan::{load_plan, role_manifest::RoleManifest, PlanRequest};
    use fissile_oci::release::LoadOptions;
    let tmp = tempfile::tempdir().unwrap();
    let (ra, rb) = two_releases(tmp.path());
    let manifest = tmp.path().join("roles.yml");
    write(
        &manifest,
        b"instance_groups:\n- name: edge\n  jobs:\n  - name: router\n    release: web\n- name: api\n  jobs:\n  - name: api\n    release: app\n  - name: router\n    release: web\n",
        0o644,
    );
    let paths = vec![ra, rb];
    let load = LoadOptions::new(tmp.path().join("no-cache"));
    let plan = load_plan(
        &PlanRequest {
            paths: &paths,
            load: &load,
            role_manifest: Some(&manifest),
            roles: None,
            only_releases: None,
        },
        &mut |_, _| {},
    )
    .unwrap();
    let groups = plan
        .instance_groups(&RoleManifest::read(&manifest).unwrap())
        .unwrap();
    let names = |packages: &[usize]| -> Vec<String> {
        packages
            .iter()
            .map(|&n| plan.nodes[n].name.clone())
            .collect()
    };
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].name, "edge");
    assert_eq!(names(&groups[0].packages), vec!["openssl", "nginx"]);
    assert_eq!(groups[1].name, "api");
    assert_eq!(groups[1].jobs.len(), 2);
    // The shared openssl is one unit, listed once, before its dependants.
    assert_eq!(names(&groups[1].packages), vec!["openssl", "nginx", "ruby"]);
}
