//! Plumbing shared by every service, and nothing else: environment configuration,
//! telemetry start-up, shutdown signals, the start-up of a gRPC service (listeners,
//! health, reflection, metrics), database pools,
//! NATS subject names and trace propagation across gRPC and NATS, and the write
//! protocol of the shared conversation log (compare-and-set appends).
//!
//! Domain logic never lives here: services share wire contracts through
//! `chat-proto` and talk over gRPC and NATS.

#![forbid(unsafe_code)]

pub mod blocks;
pub mod config;
pub mod conversation_log;
pub mod db;
pub mod events;
pub mod grpc;
pub mod log_throttle;
pub mod metrics;
pub mod nats;
pub mod paced_pull;
pub mod peers;
pub mod rate_limit;
pub mod sent_keys;
pub mod server;
pub mod shutdown;
pub mod sockets;
pub mod telemetry;
pub mod time;
