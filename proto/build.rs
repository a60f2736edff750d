//! Compiles `proto/drllm.proto` with protox (a pure-Rust protobuf compiler: no protoc install).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/drllm.proto");
    let fds = protox::compile(["drllm.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
