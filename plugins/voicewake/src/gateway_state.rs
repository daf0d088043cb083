//! The gateway's voice-wake state read on every (re)connect: `voicewake.get` and `voicewake.routing.get`, and the trigger list of their answers and events.

use clawlink_core::gateway::{GatewayClient, GatewayError, RequestOptions};
use serde_json::Value;

use crate::TRIGGER_RPC_TIMEOUT;

/// The result of the `voicewake.get` / `voicewake.routing.get` pair made on a new connection.
pub(crate) struct Fetched {
    pub(crate) triggers: Result<Value, GatewayError>,
    pub(crate) routing: Result<Value, GatewayError>,
    /// How many `voicewake.changed` events had been applied when the fetch started: a later
    /// event is newer than what the fetch returns.
    pub(crate) changes_at_start: u64,
}

pub(crate) async fn fetch(gateway: GatewayClient, changes_at_start: u64) -> Fetched {
    let options = RequestOptions {
        timeout: Some(TRIGGER_RPC_TIMEOUT),
        expect_final: false,
    };
    let triggers = gateway
        .request_with("voicewake.get", Value::Null, options)
        .await;
    let routing = gateway
        .request_with("voicewake.routing.get", Value::Null, options)
        .await;
    Fetched {
        triggers,
        routing,
        changes_at_start,
    }
}

/// The trigger list of a `voicewake.get` result or a `voicewake.changed` payload.
pub fn triggers_of(payload: &Value) -> Option<Vec<String>> {
    let list: Vec<String> = payload
        .get("triggers")?
        .as_array()?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    (!list.is_empty()).then_some(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trigger_payloads_are_read_leniently() {
        assert_eq!(
            triggers_of(&json!({"triggers": ["a", 3, "b"]})),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(triggers_of(&json!({"triggers": []})), None);
        assert_eq!(triggers_of(&json!({})), None);
    }
}
