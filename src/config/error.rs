//! Config errors that point at the offending place in the file.

use std::fmt;
use std::ops::Range;

/// A config problem, shown as `file:line:col: message` when a place is known.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl ConfigError {
    pub fn io(file: &str, err: std::io::Error) -> Self {
        ConfigError {
            file: file.to_string(),
            position: None,
            message: format!("cannot read config: {err}"),
        }
    }

    pub fn from_toml(file: &str, text: &str, err: &toml::de::Error) -> Self {
        let message = err.message().trim().to_string();
        let position = err.span().map(|s| line_col(text, s.start));
        ConfigError {
            file: file.to_string(),
            position: position.or(Some((1, 1))),
            message,
        }
    }

    /// An error at a byte span of the file text.
    pub fn at(file: &str, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            position: Some(line_col(text, span.start)),
            message: message.into(),
        }
    }

    /// An error that has no place in the file (an environment variable, a flag).
    pub fn general(file: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            position: None,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{}:{}: {}", self.file, line, col, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
    }
}
