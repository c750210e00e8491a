//! Cache keys: what a compiled package depends on, hashed. Changing a package, any dependency
//! (transitively, since each dependency's key covers its own), or the compilation base changes
//! the key and so recompiles exactly what is affected.
//!
//! Packages imported from compiled releases have no compilation base: they are stored under an
//! [`import_key`] (what exactly was imported) and found for source packages only through their
//! [`reuse_key`], the director's rule as a hash.

use sha2::Digest as _;

use crate::release::Stemcell;

/// `sha256("fissile-oci/1" | name | fingerprint | base manifest digest | for each direct
/// dependency sorted by name: name + its key)`, fields separated by newlines so no two inputs
/// run together. The package name is in the key because two packages with the same files (so the
/// same fingerprint) still install to different `/var/vcap/packages/<name>` paths.
pub fn cache_key(
    name: &str,
    fingerprint: &str,
    base_digest: &str,
    dependencies: &[(String, String)],
) -> String {
    hash(
        &["fissile-oci/1", name, fingerprint, base_digest],
        dependencies,
    )
}

/// The key of a package imported from a compiled release: `sha256("fissile-oci/imported/1" |
/// name | fingerprint | stemcell OS | stemcell version | the archive's digest as recorded |
/// for each direct dependency sorted by name: name + its import key)`. Two compiled releases
/// with different archives of one package are two images; the same archive imported twice is
/// one. It never equals a [`cache_key`], so no compile ever finds an import by its key.
pub fn import_key(
    name: &str,
    fingerprint: &str,
    stemcell: &Stemcell,
    archive_digest: &str,
    dependencies: &[(String, String)],
) -> String {
    hash(
        &[
            "fissile-oci/imported/1",
            name,
            fingerprint,
            &stemcell.os,
            &stemcell.version,
            archive_digest,
        ],
        dependencies,
    )
}

/// What an imported package and a source package must share for the import to stand in for a
/// compile, as a director decides it: `sha256("fissile-oci/reuse/1" | name | fingerprint |
/// stemcell OS | first component of the stemcell version | for each direct dependency sorted by
/// name: name + its reuse key)`. The dependencies' reuse keys cover their names, fingerprints
/// and dependencies in turn, which is the director's dependency key.
pub fn reuse_key(
    name: &str,
    fingerprint: &str,
    stemcell: &Stemcell,
    dependencies: &[(String, String)],
) -> String {
    hash(
        &[
            "fissile-oci/reuse/1",
            name,
            fingerprint,
            &stemcell.os,
            stemcell.major(),
        ],
        dependencies,
    )
}

/// The fields, one per line, then each dependency as `name key`, sorted: no two inputs run
/// together.
fn hash(fields: &[&str], dependencies: &[(String, String)]) -> String {
    let mut deps: Vec<&(String, String)> = dependencies.iter().collect();
    deps.sort();
    let mut h = sha2::Sha256::new();
    for part in fields {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    for (dep, key) in deps {
        h.update(dep.as_bytes());
        h.update(b" ");
        h.update(key.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The store ref of a compiled package.
pub fn package_ref(name: &str, key: &str) -> String {
    format!("pkg-{name}-{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_matters_and_dependency_order_does_not() {
        let deps = vec![
            ("a".to_string(), "k1".to_string()),
            ("b".to_string(), "k2".to_string()),
        ];
        let base = cache_key("p", "fp", "sha256:base", &deps);
        let mut reversed = deps.clone();
        reversed.reverse();
        assert_eq!(base, cache_key("p", "fp", "sha256:base", &reversed));
        assert_ne!(base, cache_key("q", "fp", "sha256:base", &deps));
        assert_ne!(base, cache_key("p", "fp2", "sha256:base", &deps));
        assert_ne!(base, cache_key("p", "fp", "sha256:other", &deps));
        assert_ne!(base, cache_key("p", "fp", "sha256:base", &deps[..1]));
        let changed = vec![
            ("a".to_string(), "k1".to_string()),
            ("b".to_string(), "k3".to_string()),
        ];
        assert_ne!(base, cache_key("p", "fp", "sha256:base", &changed));
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn imports_are_exact_and_reuse_follows_the_directors_rule() {
        let jammy = |v: &str| Stemcell::parse(&format!("ubuntu-jammy/{v}")).unwrap();
        let deps = vec![("a".to_string(), "k1".to_string())];
        let import = import_key("p", "fp", &jammy("1.329"), "sha1", &deps);
        assert_ne!(
            import,
            import_key("p", "fp", &jammy("1.400"), "sha1", &deps)
        );
        assert_ne!(
            import,
            import_key("p", "fp", &jammy("1.329"), "sha2", &deps)
        );
        assert_ne!(import, cache_key("p", "fp", "sha1", &deps));
        let reuse = reuse_key("p", "fp", &jammy("1.329"), &deps);
        assert_eq!(reuse, reuse_key("p", "fp", &jammy("1.400"), &deps));
        assert_ne!(reuse, reuse_key("p", "fp", &jammy("2.1"), &deps));
        let noble = Stemcell::parse("ubuntu-noble/1.329").unwrap();
        assert_ne!(reuse, reuse_key("p", "fp", &noble, &deps));
        assert_ne!(reuse, reuse_key("p", "fp", &jammy("1.329"), &[]));
    }
}
