//! The gRPC protocol between the coordinator and the workers of the distributed search: the
//! generated messages, client and server of `proto/drllm.proto`, their conversions to and from
//! the contract's types ([`convert`]), and the protocol version both sides check at registration.

#![warn(missing_docs)]

/// Bumped on any incompatible change of the messages or their meaning.
/// Version 2: the run settings travel as typed messages instead of JSON.
/// Version 3: examples and records travel as typed messages too; no JSON is left.
pub const PROTOCOL_VERSION: u32 = 3;

/// The record schema version (`drllm_contract::SCHEMA_VERSION`) that the `SearchRecord` message
/// of each protocol version carries. A record schema change changes the message, so it needs a
/// new protocol version: the test `protocol_and_record_schema_change_together` fails until both
/// are bumped and the pair is added here.
pub const PROTOCOL_SCHEMAS: &[(u32, &str)] = &[(3, "3")];

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
pub mod convert;
pub mod http;
pub mod size;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_and_record_schema_change_together() {
        let (protocols, schemas): (Vec<u32>, Vec<&str>) = PROTOCOL_SCHEMAS.iter().copied().unzip();
        let unique = |n: usize, mut v: Vec<String>| {
            v.sort();
            v.dedup();
            v.len() == n
        };
        let n = PROTOCOL_SCHEMAS.len();
        assert!(
            unique(n, protocols.iter().map(u32::to_string).collect())
                && unique(n, schemas.iter().map(|s| s.to_string()).collect()),
            "each protocol version carries one record schema, and each schema one protocol"
        );
        assert!(
            PROTOCOL_SCHEMAS.contains(&(PROTOCOL_VERSION, drllm_contract::SCHEMA_VERSION)),
            "PROTOCOL_VERSION {PROTOCOL_VERSION} and record SCHEMA_VERSION {} are not a pair of \
             PROTOCOL_SCHEMAS: bump both together and add the pair",
            drllm_contract::SCHEMA_VERSION
        );
    }
}
