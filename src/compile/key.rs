//! Cache keys: what a compiled package depends on, hashed. Changing a package, any dependency
//! (transitively, since each dependency's key covers its own), or the compilation base changes
//! the key and so recompiles exactly what is affected.

use sha2::Digest as _;

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
    let mut deps: Vec<&(String, String)> = dependencies.iter().collect();
    deps.sort();
    let mut h = sha2::Sha256::new();
    for part in ["fissile-oci/1", name, fingerprint, base_digest] {
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
}
