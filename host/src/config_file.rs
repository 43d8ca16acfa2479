//! The config file as each section's owner reads it: errors that name the file, the key and the
//! line, secret references (`{ from_env = ... }`, `{ from_file = ... }`), paths relative to the
//! file, and the value types several sections share.
//!
//! It sits below every module that owns a section (`state`, `server`, `telemetry`, `routing`,
//! `capability`, `runtime`), so that each parses its own section and [`crate::config`] only
//! assembles them: imports go one way.

use std::cell::RefCell;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error (part of the message, not a separate cause, so it is printed once).
        error: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with the line and the key.
        message: String,
    },
    /// A value is well-formed but wrong (an unknown backend, a bad glob).
    #[error("invalid config {path}, line {line}: `{key}`: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The line of the offending value.
        line: usize,
        /// The offending key, as a TOML path.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A secret value: compared and used, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The file being parsed: for relative paths and for errors that name the line.
pub struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
    /// The files read for values so far (see `Config::included_files`).
    included: RefCell<Vec<PathBuf>>,
}

impl<'a> Source<'a> {
    /// The config file at `path`, whose content is `text`.
    pub fn new(path: &'a Path, text: &'a str) -> Source<'a> {
        Source {
            path,
            text,
            base: path.parent().unwrap_or(Path::new(".")),
            included: RefCell::default(),
        }
    }

    /// The config file's path.
    pub fn file(&self) -> &Path {
        self.path
    }

    /// The error for the value at `span` under `key`.
    pub fn invalid(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
            key: key.into(),
            message: message.into(),
        }
    }

    /// The 1-based line of the value at `span`.
    pub fn line(&self, span: Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    /// `path` as written in the file: relative to the file's folder.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.base.join(path)
    }

    /// The value of a secret reference (`{ from_env = ... }` or `{ from_file = ... }`), noting
    /// the file it came from.
    pub fn secret(&self, table: &toml::Table) -> Result<String, String> {
        let value = resolve_secret(table, self.base)?;
        if let Some(file) = table.get("from_file").and_then(|p| p.as_str()) {
            self.include(self.base.join(file));
        }
        Ok(value)
    }

    /// A value that is a string or a secret reference (a token, a password), under `key`.
    pub fn string_or_secret(
        &self,
        value: Spanned<toml::Value>,
        key: &str,
    ) -> Result<String, ConfigError> {
        let span = value.span();
        match value.into_inner() {
            toml::Value::String(s) => Ok(s),
            toml::Value::Table(table) if is_secret_reference(&table) => self
                .secret(&table)
                .map_err(|message| self.invalid(span, key, message)),
            _ => Err(self.invalid(
                span,
                key,
                "must be a string, { from_env = \"NAME\" } or { from_file = \"path\" }",
            )),
        }
    }

    /// Note that the config took a value from `file`.
    pub fn include(&self, file: PathBuf) {
        let mut included = self.included.borrow_mut();
        if !included.contains(&file) {
            included.push(file);
        }
    }

    /// The files the config took values from, in the order first read.
    pub fn included(self) -> Vec<PathBuf> {
        self.included.into_inner()
    }
}

/// A duration written the human way (`"10s"`, `"250ms"`).
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        humantime_serde::deserialize(deserializer).map(HumanDuration)
    }
}

/// The longest deadline a backend call or a state operation may have: beyond it a timeout is a
/// typo, and adding it to the clock could overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// A duration that must be more than zero and at most [`MAX_TIMEOUT`].
pub fn check_timeout(
    value: Spanned<HumanDuration>,
    key: String,
    source: &Source,
) -> Result<Duration, ConfigError> {
    let duration = value.get_ref().0;
    if duration.is_zero() || duration > MAX_TIMEOUT {
        return Err(source.invalid(value.span(), key, "must be more than 0s and at most 1h"));
    }
    Ok(duration)
}

/// A TOML error as position, key and message, never the source line itself: the line may hold a
/// secret (an unterminated `api_key = "...`), and the message goes to logs, the admin API and
/// `check`'s output. Quoted values in the parser's message are left out for the same reason.
pub fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let message = redact_quoted(error.message().trim_end());
    let Some(span) = error.span() else {
        return ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    match key_at(text, line, column) {
        Some(key) => ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            key,
            message: format!("column {column}: {message}"),
        },
        None => ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("line {line}, column {column}: {message}"),
        },
    }
}

/// The dotted key of the value at `column` (1-based, in characters) of line `line` (1-based)
/// of `text`: its table, then the keys of the inline tables open before it on the line, then
/// its own; or the table when the line is a table header.
fn key_at(text: &str, line: usize, column: usize) -> Option<String> {
    let is_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | ' '))
    };
    let header = |l: &str| {
        let l = l.trim();
        let inner = l.strip_prefix("[[").and_then(|l| l.strip_suffix("]]"));
        let inner = inner.or_else(|| l.strip_prefix('[').and_then(|l| l.split(']').next()));
        inner
            .map(str::trim)
            .filter(|k| is_key(k))
            .map(str::to_string)
    };
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?;
    if let Some(table) = header(this) {
        return Some(table);
    }
    // Walk the line up to the column: `key =` names the next value, `{` opens an inline table
    // under the last key, `}` closes one; quoted text is skipped.
    let mut path: Vec<String> = Vec::new();
    let (mut current, mut last) = (String::new(), None::<String>);
    let mut quote = None;
    for c in this.chars().take(column.saturating_sub(1)) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if last.is_none() || !current.trim().is_empty() => {
                current.push(c);
            }
            (None, '"' | '\'') => quote = Some(c),
            (None, '=') => {
                let key = current.trim().to_string();
                last = is_key(&key).then_some(key);
                current.clear();
            }
            (None, '{') => {
                path.extend(last.take());
                current.clear();
            }
            (None, '}') => {
                path.pop();
                current.clear();
            }
            (None, ',') => current.clear(),
            (None, c) => current.push(c),
        }
    }
    path.extend(last);
    if path.is_empty() {
        return None;
    }
    let key = path.join(".");
    let table = lines[..line - 1].iter().rev().find_map(|l| header(l));
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key,
    })
}

/// `message` with every double-quoted part replaced by `"…"`: serde quotes the values it
/// rejects (`invalid type: string "…"`), and a value may be a secret.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

/// A settings value `{ from_env = "NAME" }` or `{ from_file = "path" }`: a secret kept out of
/// the config file.
pub fn is_secret_reference(table: &toml::Table) -> bool {
    table.len() == 1 && (table.contains_key("from_env") || table.contains_key("from_file"))
}

fn resolve_secret(table: &toml::Table, base: &Path) -> Result<String, String> {
    if let Some(name) = table.get("from_env") {
        let name = name
            .as_str()
            .ok_or("`from_env` must name an environment variable")?;
        return std::env::var(name)
            .map_err(|_| format!("environment variable `{name}` is not set"));
    }
    let path = table
        .get("from_file")
        .and_then(|p| p.as_str())
        .ok_or("`from_file` must be a path")?;
    let path = base.join(path);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    // Files written by `echo` or editors end with a newline that is not part of the secret.
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
