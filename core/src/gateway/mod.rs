//! The OpenClaw Gateway client (protocol v4): frames, device identity, auth, errors, state and the supervised connection.

pub mod auth;
pub mod backoff;
mod client;
pub mod device;
pub mod error;
pub mod protocol;
pub mod state;

pub use auth::{Credentials, DeviceTokenStore, MemoryTokenStore};
pub use backoff::Backoff;
pub use client::{
    native_platform, ClientOptions, GatewayClient, GatewayEvent, RequestOptions, ShutdownOutcome,
    CLOSE_FRAME_DEADLINE, EARLY_EVENTS_MAX, MAX_MESSAGE_BYTES, OPERATOR_SCOPES, SHUTDOWN_DEADLINE,
};
pub use device::DeviceIdentity;
pub use error::{GatewayError, Layer};
pub use protocol::HelloOk;
pub use state::{ConnectionState, Phase};
