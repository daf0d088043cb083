//! The OpenClaw Gateway client (protocol v4): frames, device identity, auth, errors, state and the supervised connection.

pub mod auth;
pub mod backoff;
mod client;
pub mod device;
pub mod error;
pub mod liveness;
pub mod protocol;
pub mod state;

pub use auth::{Credentials, DeviceTokenStore, MemoryTokenStore};
pub use backoff::Backoff;
pub use client::{
    native_platform, ClientOptions, GatewayClient, GatewayEvent, RequestOptions, ShutdownOutcome,
    CLOSE_FRAME_DEADLINE, EARLY_EVENTS_MAX, OPERATOR_SCOPES, SHUTDOWN_DEADLINE,
};
pub use device::DeviceIdentity;
pub use error::{GatewayError, Layer};
pub use liveness::LivenessPolicy;
pub use protocol::{HelloOk, MAX_FRAME_BYTES};
pub use state::{ConnectionState, Phase, Recovery};
