//! Configuration error messages that never quote a value: a TOML syntax error reports where
//! (line, column) and what the parser says, never the file's text; a settings field that cannot
//! be read is named, and the reason is dropped when the field is secret.

use toml::Value;

/// A syntax error in the secrets file `text`: line, column and the parser's message. Never the
/// line itself (toml's `Display` quotes it, and it may hold a password); a value the parser
/// quotes back in its message (an integer too large, say) is hidden too.
pub(super) fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = without_quoted_values(e.message().trim());
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("not valid TOML at line {line}, column {column}: {message}")
        }
        None => format!("not valid TOML: {message}"),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    // Characters, not bytes: count the bytes that start one (no copy of the line is made).
    let column = before[line_start..].iter().filter(|&&b| b & 0xC0 != 0x80).count() + 1;
    (line, column)
}

/// `message` with every `` `quoted` `` or `"quoted"` part of its description hidden. Parser
/// and serde messages read "what is wrong, expected what": the values come before
/// `, expected`; what follows lists the tokens the parser wanted, which are kept.
pub(super) fn without_quoted_values(message: &str) -> String {
    let (what, expected) = match message.find(", expected ") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = what;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('`');
        out.push_str(&rest[..open]);
        match rest[open + 1..].find(quote) {
            Some(close) => {
                out.extend([quote, '…', quote]);
                rest = &rest[open + 1 + close + 1..];
            }
            None => {
                // An unclosed quote: everything after it may be the value.
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.push_str(expected);
    out
}

/// Why settings could not be read: `message` (serde's) about `field` (the TOML key path, when
/// known). When the field is one of `secret_fields`, or the message quotes the value of one,
/// only the field's name is kept.
pub(super) fn settings_error(
    message: &str,
    field: Option<&str>,
    secret_fields: &[&str],
    table: &toml::Table,
) -> String {
    let top = field.map(|f| f.split('.').next().unwrap_or(f));
    if let Some(field) = field
        && top.is_some_and(|f| secret_fields.contains(&f))
    {
        return format!("`{field}` is not accepted (the reason is not shown for a secret field)");
    }
    let quotes_a_secret =
        secret_fields.iter().filter_map(|name| table.get(*name)).any(|v| quoted_in(message, v));
    match (quotes_a_secret, field) {
        (true, Some(field)) => {
            format!("`{field}` is not accepted (the reason is not shown: it would quote a secret)")
        }
        (true, None) => {
            "a field is not accepted (the reason is not shown: it would quote a secret)".to_owned()
        }
        (false, Some(field)) => format!("`{field}`: {message}"),
        (false, None) => message.to_owned(),
    }
}

/// The key path toml names in its error (`in `a.b``), if any. toml keeps it out of
/// `message()`, and shows it on the last line of `Display` when there is no source text.
pub(super) fn field_of(e: &toml::de::Error) -> Option<String> {
    let shown = e.to_string();
    let last = shown.trim_end().lines().last()?;
    let path = last.strip_prefix("in `")?.strip_suffix('`')?;
    (!path.is_empty()).then(|| path.to_owned())
}

/// Whether `message` quotes `value` (or any part of it) between backticks or double quotes.
fn quoted_in(message: &str, value: &Value) -> bool {
    match value {
        Value::String(s) => !s.is_empty() && quoted_parts(message).any(|q| q.contains(s.as_str())),
        Value::Integer(i) => quoted_parts(message).any(|q| q.contains(&i.to_string())),
        Value::Float(f) => quoted_parts(message).any(|q| q.contains(&f.to_string())),
        Value::Boolean(_) | Value::Datetime(_) => false,
        Value::Array(items) => items.iter().any(|v| quoted_in(message, v)),
        Value::Table(t) => t.values().any(|v| quoted_in(message, v)),
    }
}

/// The parts of `message` between a pair of backticks or of double quotes.
fn quoted_parts(message: &str) -> impl Iterator<Item = &str> {
    let mut rest = message;
    std::iter::from_fn(move || {
        let open = rest.find(['`', '"'])?;
        let quote = rest[open..].chars().next()?;
        let body = &rest[open + 1..];
        match body.find(quote) {
            Some(close) => {
                rest = &body[close + 1..];
                Some(&body[..close])
            }
            None => {
                rest = "";
                Some(body)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(text: &str) -> String {
        let e = text.parse::<toml::Table>().err().unwrap();
        syntax_error(text, &e)
    }

    #[test]
    fn a_syntax_error_says_where_and_what_but_not_the_line() {
        let text = "[connections.db]\nuser = \"ada\"\npassword = \"hunter2\n";
        let shown = parse_error(text);
        assert!(shown.starts_with("not valid TOML at line 3, column 20: "), "{shown}");
        assert!(shown.contains("invalid basic string"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("password"), "{shown}");

        let shown = parse_error("a = 1\npassword = hunter2\n");
        assert!(shown.starts_with("not valid TOML at line 2, column 12: "), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_value_the_parser_quotes_back_is_hidden() {
        let shown = parse_error("password = 918273645918273645918273645\n");
        assert!(!shown.contains("918273645"), "{shown}");
        assert!(shown.contains("line 1, column 12"), "{shown}");
        // The tokens the parser expected are kept.
        let shown = parse_error("p = \"\\q hunter2\"");
        assert!(shown.contains("expected `b`, `e`"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_column("é = x", 4), (1, 4));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(line_column("a", 99), (1, 2));
    }

    #[test]
    fn quoted_values_are_hidden_before_expected() {
        assert_eq!(
            without_quoted_values("invalid type: integer `918273645`, expected `a`"),
            "invalid type: integer `…`, expected `a`"
        );
        assert_eq!(without_quoted_values("invalid value: string \"pw\""), "invalid value: string \"…\"");
        assert_eq!(without_quoted_values("odd `pw"), "odd …");
    }

    #[test]
    fn a_secret_field_keeps_its_name_only() {
        let table: toml::Table = "password = 'hunter2'\nport = 99999".parse().unwrap();
        let secret = ["password"];
        let shown = settings_error("`hunter2` is too short", Some("password"), &secret, &table);
        assert_eq!(shown, "`password` is not accepted (the reason is not shown for a secret field)");
        let shown = settings_error("no good: `hunter2`", None, &secret, &table);
        assert!(!shown.contains("hunter2"), "{shown}");
        let shown =
            settings_error("invalid value: integer `99999`, expected u16", Some("port"), &secret, &table);
        assert_eq!(shown, "`port`: invalid value: integer `99999`, expected u16");
    }
}
