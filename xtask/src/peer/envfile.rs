//! The `<prefix>/run/env` file: ordered KEY=VALUE lines that tests load to find the peers.

use std::path::Path;

use anyhow::{Context, Result};

/// Ordered KEY=VALUE pairs; order is kept so the file reads like the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvFile {
    entries: Vec<(String, String)>,
}

impl EnvFile {
    pub fn load(path: &Path) -> Result<EnvFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(EnvFile::parse(&text))
    }

    pub fn parse(text: &str) -> EnvFile {
        let entries = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.to_string()))
            .collect();
        EnvFile { entries }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key)
            .with_context(|| format!("{key} missing from the peer env file"))
    }

    /// Replaces the value in place, or appends a new key at the end.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    }

    /// Mode 0600: the file holds the gateway token and password.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::util::write_file_mode(path, self.render().as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_updates_in_place() {
        let mut env = EnvFile::default();
        env.set("A", "1");
        env.set("B", "x=y");
        env.set("A", "2");
        assert_eq!(env.render(), "A=2\nB=x=y\n");
        let parsed = EnvFile::parse(&env.render());
        assert_eq!(parsed, env);
        assert_eq!(parsed.get("B"), Some("x=y"));
        assert!(parsed.require("C").is_err());
    }
}
