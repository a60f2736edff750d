//! The gRPC protocol between the coordinator and the workers of the distributed search: the
//! generated messages, client and server of `proto/drllm.proto`, and the protocol version both
//! sides check at registration.

#![warn(missing_docs)]

/// Bumped on any incompatible change of the messages or their meaning.
/// Version 2: the run settings travel as typed messages instead of JSON.
pub const PROTOCOL_VERSION: u32 = 2;

/// The metadata key of the bearer token every call carries.
pub const AUTH_HEADER: &str = "authorization";

/// The `drllm.v1` package: the messages, client and server `tonic-prost-build` generates from
/// `proto/drllm.proto`.
// The messages and their fields are documented in proto/drllm.proto; the generated code is not.
#[allow(missing_docs)]
pub mod v1 {
    tonic::include_proto!("drllm.v1");
}

pub use v1::coordinator_client::CoordinatorClient;
pub use v1::coordinator_server::{Coordinator, CoordinatorServer};

pub mod client;
pub mod http;
pub mod settings;
