//! `WWW-Authenticate` challenges (RFC 7235): how a registry wants to be authenticated to.
//! Registries send `Basic realm="…"` (htpasswd) or `Bearer realm="…",service="…",scope="…"`
//! (a token service); a header may carry several challenges.

/// What the registry asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The challenge to answer among the given header values: Bearer is preferred, as
/// containers/image does, since it works with every kind of credential.
pub fn parse(values: &[&str]) -> Option<Challenge> {
    let mut found = Vec::new();
    for value in values {
        found.extend(parse_header(value));
    }
    found
        .iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or_else(|| found.first())
        .cloned()
}

fn parse_header(value: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut scheme: Option<String> = None;
    let mut params: Vec<(String, String)> = Vec::new();
    let mut rest = value.trim();
    let flush = |scheme: &mut Option<String>,
                 params: &mut Vec<(String, String)>,
                 out: &mut Vec<Challenge>| {
        if let Some(s) = scheme.take() {
            let get = |k: &str| {
                params
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            match s.to_ascii_lowercase().as_str() {
                "basic" => out.push(Challenge::Basic),
                "bearer" => {
                    if let Some(realm) = get("realm") {
                        out.push(Challenge::Bearer {
                            realm,
                            service: get("service"),
                        });
                    }
                }
                _ => {}
            }
        }
        params.clear();
    };
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        // A token followed by '=' is a parameter; otherwise it starts a new challenge.
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start();
        if let Some(value_part) = after.strip_prefix('=') {
            let value_part = value_part.trim_start();
            let (value, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end.min(quoted.len())..])
            } else {
                let end = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..end].trim().to_string(), &value_part[end..])
            };
            params.push((token.to_string(), value));
            rest = remaining;
        } else {
            flush(&mut scheme, &mut params, &mut out);
            scheme = Some(token.to_string());
            rest = after;
        }
    }
    flush(&mut scheme, &mut params, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic() {
        assert_eq!(
            parse(&[
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#
            ]),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            })
        );
        assert_eq!(
            parse(&[r#"Basic realm="Registry Realm""#]),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse(&[r#"Basic realm="x", Bearer realm="https://t/\"q\"", service=s"#]),
            Some(Challenge::Bearer {
                realm: "https://t/\"q\"".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(parse(&["Negotiate"]), None);
        assert_eq!(parse(&[]), None);
    }
}
