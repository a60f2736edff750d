//! The gRPC protocol between the coordinator and the workers of the distributed search: the
//! generated messages, client and server of `proto/drllm.proto`, and the protocol version both
//! sides check at registration.

/// Bumped on any incompatible change of the messages or their meaning.
/// Version 2: the run settings travel as typed messages instead of JSON.
pub const PROTOCOL_VERSION: u32 = 2;

/// The metadata key of the bearer token every call carries.
pub const AUTH_HEADER: &str = "authorization";

pub mod v1 {
    tonic::include_proto!("drllm.v1");
}

pub use v1::coordinator_client::CoordinatorClient;
pub use v1::coordinator_server::{Coordinator, CoordinatorServer};

pub mod client;
pub mod http;
pub mod settings;
