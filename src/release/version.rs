//! Semi-semantic versions as the bosh CLI orders them (`1`, `1.2`, `12+dev.3`, `1.0-rc.1`):
//! a release part, optional `-pre` part and optional `+post` part, each dot-separated.

use std::cmp::Ordering;

/// Compares two versions the way bosh picks the "latest" one.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ar, apre, apost) = split(a);
    let (br, bpre, bpost) = split(b);
    compare_segment(ar, br)
        .then_with(|| match (apre, bpre) {
            // A pre-release sorts before the release it precedes.
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => compare_segment(x, y),
        })
        .then_with(|| match (apost, bpost) {
            // A post-release (`+dev.N`) sorts after the release it follows.
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => compare_segment(x, y),
        })
}

fn split(v: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, post) = match v.split_once('+') {
        Some((r, p)) => (r, Some(p)),
        None => (v, None),
    };
    let (release, pre) = match rest.split_once('-') {
        Some((r, p)) => (r, Some(p)),
        None => (rest, None),
    };
    (release, pre, post)
}

fn compare_segment(a: &str, b: &str) -> Ordering {
    let mut ai = a.split('.');
    let mut bi = b.split('.');
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// The greatest of `versions`, by [`compare`].
pub fn latest<'a>(versions: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    versions.into_iter().max_by(|a, b| compare(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_bosh() {
        let mut v = vec![
            "10+dev.1",
            "9+dev.12",
            "9+dev.2",
            "9",
            "10",
            "1.0-rc.1",
            "1.0",
            "10+dev.10",
            "2.1.0",
        ];
        v.sort_by(|a, b| compare(a, b));
        assert_eq!(
            v,
            vec![
                "1.0-rc.1",
                "1.0",
                "2.1.0",
                "9",
                "9+dev.2",
                "9+dev.12",
                "10",
                "10+dev.1",
                "10+dev.10"
            ]
        );
        assert_eq!(latest(["0+dev.3", "0+dev.11", "0+dev.9"]), Some("0+dev.11"));
    }
}
