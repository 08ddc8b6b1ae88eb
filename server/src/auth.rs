//! Bearer tokens with two scopes. Tokens are kept only as SHA-256 digests and a presented token is
//! compared against every digest in constant time, so neither memory dumps nor timing reveal one.
//! Nothing here logs a token: errors name the file and line, never the value.

use std::path::Path;

use sha2::{Digest, Sha256};

use quorum::{Error, Result};

/// What a token may do. `Admin` includes `Predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Predictions, outcomes and read-only requests.
    Predict,
    /// Everything that changes state: registration, ensembles, set-default, optimize, benchmark.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Predict => "predict",
            Scope::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Scope> {
        match text {
            "predict" => Some(Scope::Predict),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// The accepted tokens (digests only).
#[derive(Clone, Default)]
pub struct Tokens {
    digests: Vec<([u8; 32], Scope)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("count", &self.digests.len()).finish_non_exhaustive()
    }
}

/// Environment variables that add tokens (comma-separated values).
pub const ADMIN_TOKENS_ENV: &str = "QUORUM_ADMIN_TOKENS";
pub const PREDICT_TOKENS_ENV: &str = "QUORUM_PREDICT_TOKENS";

/// Tokens shorter than this are refused: a guessable token is no protection.
const MIN_TOKEN_CHARS: usize = 16;

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Adds one token.
    pub fn add(&mut self, scope: Scope, token: &str) -> Result<()> {
        if token.chars().count() < MIN_TOKEN_CHARS || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Config(format!(
                "a {} token must be at least {MIN_TOKEN_CHARS} characters without spaces",
                scope.as_str()
            )));
        }
        self.digests.push((digest(token), scope));
        Ok(())
    }

    /// Reads `SCOPE TOKEN` lines (blank lines and `#` comments skipped).
    pub fn read_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(scope), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(Error::Config(format!(
                    "{} line {}: expected `SCOPE TOKEN` (scope predict or admin)",
                    path.display(),
                    number + 1
                )));
            };
            let scope = Scope::parse(scope).ok_or_else(|| {
                Error::Config(format!("{} line {}: scope must be predict or admin", path.display(), number + 1))
            })?;
            self.add(scope, token)
                .map_err(|e| Error::Config(format!("{} line {}: {e}", path.display(), number + 1)))?;
        }
        Ok(())
    }

    /// Adds the tokens of the environment variables [`ADMIN_TOKENS_ENV`] and [`PREDICT_TOKENS_ENV`].
    pub fn read_env(&mut self) -> Result<()> {
        for (var, scope) in [(ADMIN_TOKENS_ENV, Scope::Admin), (PREDICT_TOKENS_ENV, Scope::Predict)] {
            let Ok(value) = std::env::var(var) else { continue };
            for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                self.add(scope, token).map_err(|e| Error::Config(format!("{var}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The scope of `token`, if it is one of ours. Every digest is compared, in constant time each.
    pub fn scope_of(&self, token: &str) -> Option<Scope> {
        let presented = digest(token);
        let mut found = None;
        for (known, scope) in &self.digests {
            if constant_time_eq(known, &presented) {
                found = found.max(Some(*scope));
            }
        }
        found
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_tokens_get_their_scope_and_others_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# ops\nadmin  a-very-long-admin-token\n\npredict p-very-long-predict-token\n").unwrap();
        let mut tokens = Tokens::default();
        tokens.read_file(&path).unwrap();
        assert_eq!(tokens.scope_of("a-very-long-admin-token"), Some(Scope::Admin));
        assert_eq!(tokens.scope_of("p-very-long-predict-token"), Some(Scope::Predict));
        assert_eq!(tokens.scope_of("p-very-long-predict-toke"), None);
        assert_eq!(tokens.scope_of(""), None);
    }

    #[test]
    fn bad_lines_name_the_line_not_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "admin short\n").unwrap();
        let message = Tokens::default().read_file(&path).unwrap_err().to_string();
        assert!(message.contains("line 1"), "{message}");
        assert!(!message.contains("short"), "the token leaked: {message}");
        std::fs::write(&path, "root a-very-long-admin-token\n").unwrap();
        let message = Tokens::default().read_file(&path).unwrap_err().to_string();
        assert!(message.contains("predict or admin") && !message.contains("a-very-long"), "{message}");
    }

    #[test]
    fn debug_output_shows_no_digest() {
        let mut tokens = Tokens::default();
        tokens.add(Scope::Admin, "a-very-long-admin-token").unwrap();
        assert_eq!(format!("{tokens:?}"), "Tokens { count: 1, .. }");
    }
}
