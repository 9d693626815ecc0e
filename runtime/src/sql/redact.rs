//! Connection URLs without their secrets, for `Debug`, errors and logs: the password of the
//! user info and the values of query parameters that carry one.

/// Query parameters whose value is a secret, matched on the key's lowercase, percent-decoded
/// form: containing one of these...
const SECRET_KEY_PARTS: &[&str] = &["password", "passwd", "secret", "token"];
/// ...or equal to one of these.
const SECRET_KEYS: &[&str] = &["pwd", "pass"];

/// Hides the secrets of a connection URL such as `postgres://user:pw@host/db?sslpassword=pw`:
/// `postgres://user:***@host/db?sslpassword=***`.
///
/// Robust to passwords written unescaped: one holding `/`, `?`, `#` or `@` makes a URL parser
/// end the user info early and show the rest as host and path, so the user info here ends at
/// the *last* `@` (a `@` in the query of a `host:port/...` URL excepted). When in doubt, more is
/// hidden, never less.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len() + 8);
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            match password_span(rest) {
                Some((colon, at)) => {
                    out.push_str(&rest[..colon]);
                    out.push_str(":***");
                    &rest[at..]
                }
                None => rest,
            }
        }
        None => url,
    };
    match rest.split_once('?') {
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            redact_query(query, &mut out);
        }
        None => out.push_str(rest),
    }
    out
}

/// In `rest` (the URL after `scheme://`): the `:` that starts the user info's password and the
/// `@` that ends it, if there is a password.
fn password_span(rest: &str) -> Option<(usize, usize)> {
    let colon = rest.find(':')?;
    // A user name holds none of these: a `:` after one is in a path or a query, or after a
    // user with no password (`user@host:port`).
    if rest[..colon].contains(['/', '?', '#', '@']) {
        return None;
    }
    let at = colon + rest[colon..].rfind('@')?;
    // `host:port/path?query` with a `@` in the query: no user info at all.
    let after = &rest[colon + 1..at];
    let port = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
    if port > 0 && after[port..].starts_with(['/', '?', '#']) && after[port..].contains(['?', '#']) {
        return None;
    }
    Some((colon, at))
}

/// Appends `query` (`k=v&k=v`) with the values of secret keys hidden.
fn redact_query(query: &str, out: &mut String) {
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => {
                out.push_str(key);
                out.push_str("=***");
            }
            _ => out.push_str(pair),
        }
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = percent_decoded_lowercase(key);
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part)) || SECRET_KEYS.contains(&key.as_str())
}

/// `%XX` escapes decoded (invalid ones kept as they are), ASCII lowercased.
fn percent_decoded_lowercase(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact_url("postgres://ada:pw@h:5432/db"), "postgres://ada:***@h:5432/db");
        assert_eq!(redact_url("postgres://ada@h/db"), "postgres://ada@h/db");
        assert_eq!(redact_url("postgres://ada@h:5432/db"), "postgres://ada@h:5432/db");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("sqlite://app.db?mode=rwc"), "sqlite://app.db?mode=rwc");
        assert_eq!(redact_url("mysql://h/db?x=a@b"), "mysql://h/db?x=a@b");
        assert_eq!(redact_url("mysql://h:3306/db?x=a@b"), "mysql://h:3306/db?x=a@b");
    }

    #[test]
    fn a_password_with_url_characters_is_hidden_whole() {
        let cases = [
            ("postgres://ada:hun/ter2@h:5432/db", "postgres://ada:***@h:5432/db"),
            ("postgres://ada:hun@ter2@h/db", "postgres://ada:***@h/db"),
            ("postgres://ada:hun%ter2@h/db", "postgres://ada:***@h/db"),
            ("postgres://ada:hun%40ter2%2F@h/db", "postgres://ada:***@h/db"),
            ("postgres://ada:hun?ter2@h/db", "postgres://ada:***@h/db"),
            ("postgres://ada:hun#ter2@h/db", "postgres://ada:***@h/db"),
            ("postgres://ada:1234/ter2@h/db", "postgres://ada:***@h/db"),
            ("postgres://ada:h/u@n?t#e:r2@h/db", "postgres://ada:***@h/db"),
            ("postgres://ada:4242@h/db", "postgres://ada:***@h/db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn password_query_parameters_are_hidden_in_any_case() {
        let cases = [
            (
                "postgres://h/db?user=ada&password=hunter2&sslmode=require",
                "postgres://h/db?user=ada&password=***&sslmode=require",
            ),
            ("postgres://h/db?PassWord=hunter2", "postgres://h/db?PassWord=***"),
            ("postgres://h/db?sslpassword=hunter2", "postgres://h/db?sslpassword=***"),
            ("postgres://h/db?SSLPASSWORD=hunter2&x=1", "postgres://h/db?SSLPASSWORD=***&x=1"),
            ("postgres://h/db?pass%77ord=hunter2", "postgres://h/db?pass%77ord=***"),
            ("mysql://ada:pw@h/db?password=hunter2", "mysql://ada:***@h/db?password=***"),
            ("sqlite://app.db?password=hunter2", "sqlite://app.db?password=***"),
            ("sqlite::memory:?pwd=hunter2", "sqlite::memory:?pwd=***"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("hunter2"));
        }
    }

    #[test]
    fn when_in_doubt_more_is_hidden() {
        // A `@` in the query of a URL with a password: the host is hidden too, the password is.
        let shown = redact_url("postgres://ada:hunter2@h/db?application_name=a@b");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
