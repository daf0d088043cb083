//! Session keys as the macOS app chooses them: the main session from hello-ok's `sessionDefaults`, with its aliases rewritten to the canonical key.

use serde_json::Value;

/// What the gateway announced in `hello-ok.snapshot.sessionDefaults`, with the gateway's own
/// defaults filled in when an older gateway left a field out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDefaults {
    /// `main` unless the gateway has another default agent.
    pub default_agent_id: String,
    /// The main session's short key (`main`).
    pub main_key: String,
    /// The canonical main session key (`agent:main:main`, or `global` when `session.scope`
    /// is global).
    pub main_session_key: String,
    /// `per-sender` or `global`.
    pub scope: String,
}

impl Default for SessionDefaults {
    fn default() -> Self {
        Self::from_snapshot(&Value::Null)
    }
}

impl SessionDefaults {
    /// Reads `snapshot.sessionDefaults` of a hello-ok snapshot (anything missing gets the
    /// gateway's default).
    pub fn from_snapshot(snapshot: &Value) -> Self {
        let defaults = snapshot.get("sessionDefaults").unwrap_or(&Value::Null);
        let text = |key: &str| {
            defaults
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let default_agent_id = text("defaultAgentId").unwrap_or_else(|| "main".into());
        let main_key = text("mainKey").unwrap_or_else(|| "main".into());
        let scope = text("scope").unwrap_or_else(|| "per-sender".into());
        let main_session_key = text("mainSessionKey").unwrap_or_else(|| {
            if scope == "global" {
                "global".into()
            } else {
                format!("agent:{default_agent_id}:{main_key}")
            }
        });
        Self {
            default_agent_id,
            main_key,
            main_session_key,
            scope,
        }
    }

    /// The session key to use for what the user asked for: nothing means the main session,
    /// and the main session's aliases (`main`, the main key, `agent:<default>:main`,
    /// `agent:<default>:<main key>`) become its canonical key, as the app rewrites them.
    /// Any other key is used as typed (trimmed).
    pub fn canonical(&self, requested: Option<&str>) -> String {
        let Some(key) = requested.map(str::trim).filter(|k| !k.is_empty()) else {
            return self.main_session_key.clone();
        };
        let agent = &self.default_agent_id;
        let aliases = [
            "main".to_owned(),
            self.main_key.clone(),
            format!("agent:{agent}:main"),
            format!("agent:{agent}:{}", self.main_key),
        ];
        if aliases.iter().any(|alias| alias == key) {
            self.main_session_key.clone()
        } else {
            key.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live() -> SessionDefaults {
        SessionDefaults::from_snapshot(&json!({"sessionDefaults": {
            "defaultAgentId": "main", "mainKey": "main",
            "mainSessionKey": "agent:main:main", "scope": "per-sender"}}))
    }

    #[test]
    fn the_main_session_and_its_aliases_become_the_canonical_key() {
        let d = live();
        for alias in [
            None,
            Some(""),
            Some("  "),
            Some("main"),
            Some("agent:main:main"),
            Some(" main "),
        ] {
            assert_eq!(d.canonical(alias), "agent:main:main", "{alias:?}");
        }
        assert_eq!(d.canonical(Some("agent:main:work")), "agent:main:work");
        assert_eq!(d.canonical(Some("agent:ops:main")), "agent:ops:main");
    }

    #[test]
    fn another_default_agent_and_main_key_are_honoured() {
        let d = SessionDefaults::from_snapshot(&json!({"sessionDefaults": {
            "defaultAgentId": "ops", "mainKey": "home"}}));
        assert_eq!(d.main_session_key, "agent:ops:home");
        for alias in ["main", "home", "agent:ops:main", "agent:ops:home"] {
            assert_eq!(d.canonical(Some(alias)), "agent:ops:home", "{alias}");
        }
        assert_eq!(d.canonical(Some("agent:main:main")), "agent:main:main");
    }

    #[test]
    fn global_scope_and_missing_defaults() {
        let g = SessionDefaults::from_snapshot(&json!({"sessionDefaults": {"scope": "global"}}));
        assert_eq!(g.canonical(None), "global");
        assert_eq!(g.canonical(Some("main")), "global");
        let none = SessionDefaults::default();
        assert_eq!(none.main_session_key, "agent:main:main");
        assert_eq!(none.scope, "per-sender");
    }
}
