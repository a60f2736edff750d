//! Helpers for the end-to-end tests: locating the workspace's binaries, starting coordinators and
//! workers as real processes on loopback, and reading back the Parquet they produce.
