//! Alert rule files and webhook addresses, checked before anything starts: a rule file in the story's
//! YAML form (the default rules when none is given), `http://` webhook URLs, and how a URL is shown
//! without the secret its path or query may hold.

use std::collections::BTreeMap;
use std::path::Path;

use quorum::alerts::{AlertRule, RuleSpec, DEFAULT_RULES};
use quorum::{Error, Result};

/// Parses a rule file (the default rules when `None`) in the story's YAML form.
pub fn load_rules(path: Option<&Path>) -> Result<Vec<AlertRule>> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| Error::io(format!("reading the alert rules {}", p.display()), e))?,
            p.display().to_string(),
        ),
        None => (DEFAULT_RULES.to_string(), "the default alert rules".to_string()),
    };
    parse_rules(&text, &origin)
}

/// Parses rules in the story's YAML form; `origin` names them in errors.
pub fn parse_rules(text: &str, origin: &str) -> Result<Vec<AlertRule>> {
    let specs: BTreeMap<String, RuleSpec> =
        serde_saphyr::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
    quorum::alerts::rules_from_specs(&specs).map_err(|e| Error::Config(format!("{origin}: {e}")))
}

/// A webhook's address: plain HTTP (a TLS receiver needs a relay in front).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl WebhookUrl {
    pub fn parse(url: &str) -> Result<WebhookUrl> {
        let bad = |why: &str| Error::Config(format!("alert webhook {}: {why}", redact(url)));
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            bad(if url.starts_with("https://") {
                "https is not supported yet: use an http receiver or relay"
            } else {
                "must start with http://"
            })
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("the port is not a number"))?),
            None => (authority, 80),
        };
        if host.is_empty() || host.contains('@') {
            return Err(bad("needs a host (and no user:password@)"));
        }
        Ok(WebhookUrl { host: host.to_string(), port, path: if path.is_empty() { "/".into() } else { path.into() } })
    }
}

/// The scheme and host of a URL, never its path or query (they may hold a secret).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{authority}/…")
}
