//! Compiles `proto/payments.proto` with protox (pure Rust, no system
//! `protoc`) and generates the tonic client and server from its descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["payments.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
