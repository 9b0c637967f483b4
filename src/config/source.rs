//! The configuration file as text: read it, report a syntax error by place and never by
//! content (the line may hold the app secret), and tell where a secret might be exposed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::ConfigError;

/// The file's text, parsed once as TOML to check its syntax.
pub(super) struct ConfigText {
    pub text: String,
    pub table: toml::Table,
}

/// Reads and parses `path`; a syntax error names the file, line, column, what was expected
/// and, when the line has one, the key, but never the text of the line.
pub(super) fn read(path: &Path) -> Result<ConfigText, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    match toml::from_str::<toml::Table>(&text) {
        Ok(table) => Ok(ConfigText { text, table }),
        Err(e) => Err(syntax_error(path, &text, &e)),
    }
}

fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = text[line_start..at].chars().count() + 1;
    // The toml crate's Display adds the offending line, exactly what must not be printed; its
    // message alone may still quote a value (`integer `123` as i128`).
    let problem = e.message().lines().next().unwrap_or("invalid TOML").trim();
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        problem: without_quoted_values(problem),
        key: key_of_line(text, line_start),
    }
}

/// `message` with every quoted text longer than two characters (a value, where the quotes
/// around one or two characters are the punctuation expected) replaced by `...`.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('`');
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        match after.find(quote) {
            Some(close) => {
                let quoted = &after[..close];
                out.push_str(if quoted.chars().count() <= 2 {
                    quoted
                } else {
                    "..."
                });
                out.push(quote);
                rest = &after[close + 1..];
            }
            None => {
                out.push_str("...");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The key a `key = value` line at `line_start` sets, with its table (`dingtalk.page_size`),
/// or the table a `[table]` line opens.
fn key_of_line(text: &str, line_start: usize) -> Option<String> {
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let simple = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if let Some(header) = line.strip_prefix('[') {
        let name = header.trim_start_matches('[').split(']').next()?.trim();
        return simple(name).then(|| name.to_string());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if !simple(key) {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        let name = l.strip_prefix('[')?.strip_suffix(']')?.trim();
        simple(name).then_some(name)
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// The secrets written in the file itself: the app secret, the webhook's key.
pub(super) fn inline_secrets(table: &toml::Table) -> Vec<&str> {
    [("dingtalk", "app_secret"), ("notify", "secret")]
        .iter()
        .filter_map(|(section, key)| table.get(*section)?.get(*key)?.as_str())
        .collect()
}

/// A warning for each file holding a secret that other users may read.
pub(super) fn exposure_warnings(
    config: &Path,
    config_holds_secret: bool,
    secret_files: &[std::path::PathBuf],
) -> Vec<String> {
    let readable_by_others =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
    let mut warnings = Vec::new();
    if config_holds_secret && readable_by_others(config) {
        warnings.push(format!(
            "the configuration file {} holds a secret (dingtalk.app_secret or notify.secret) and \
             other users can read it; run `chmod o-r {}`, or move the secret to a root-only file \
             (app_secret_file or systemd's LoadCredential=, notify.secret_file)",
            config.display(),
            config.display()
        ));
    }
    for file in secret_files.iter().filter(|f| readable_by_others(f)) {
        warnings.push(format!(
            "the secret file {} can be read by other users; run `chmod o-r {}` (0600 or 0400)",
            file.display(),
            file.display()
        ));
    }
    warnings
}

/// Replaces each of `secrets` in `message`, however short: the operator chose them.
pub(super) fn scrub(mut message: String, secrets: &[&str]) -> String {
    for secret in secrets.iter().filter(|s| !s.trim().is_empty()) {
        message = message.replace(secret, "[redacted]");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        match read(&path) {
            Err(e) => e.to_string().replace(&path.display().to_string(), "FILE"),
            Ok(_) => panic!("{text:?} parsed"),
        }
    }

    #[test]
    fn syntax_errors_say_where_but_never_what_the_line_holds() {
        let err = error_of("[dingtalk]\napp_key = \"k\"\napp_secret = \"s3cr3t-very-long-value\n");
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(
            err.starts_with("configuration file FILE, line 3, column "),
            "{err}"
        );
        assert!(err.contains("dingtalk.app_secret"), "{err}");
        let err = error_of("[dingtalk]\npage_size = 99999999999999999999\n");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("dingtalk.page_size"), "{err}");
        assert!(!err.contains("99999"), "{err}");
    }

    #[test]
    fn quoted_values_are_left_out_of_messages() {
        assert_eq!(
            without_quoted_values("invalid type: integer `99999999999` as i128, expected `\"`"),
            "invalid type: integer `...` as i128, expected `\"`"
        );
        assert_eq!(without_quoted_values("bad \"s3cr3t"), "bad \"...");
    }

    #[test]
    fn keys_are_named_with_their_table() {
        let text = "top = 1\n[a]\nx = 1\n[b.c]\ny = 2\n";
        assert_eq!(key_of_line(text, 0).as_deref(), Some("top"));
        let y = text.find("y =").unwrap();
        assert_eq!(key_of_line(text, y).as_deref(), Some("b.c.y"));
        assert_eq!(key_of_line("\"quoted key\" = 1", 0), None);
        assert_eq!(key_of_line("[database]\n", 0).as_deref(), Some("database"));
    }

    #[test]
    fn secrets_are_scrubbed_however_short_but_blank_ones_are_not() {
        assert_eq!(
            scrub("bad value pw42 for x".into(), &["pw42", " "]),
            "bad value [redacted] for x"
        );
    }
}
