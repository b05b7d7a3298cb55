//! With feature `proto`: compiles `proto/ledger.proto` with protox (pure
//! Rust, no system `protoc`) and generates the tonic client and server from
//! its descriptors. Without it, nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "proto")]
    {
        println!("cargo:rerun-if-changed=proto");
        let descriptors = protox::compile(["ledger.proto"], ["proto"])?;
        tonic_prost_build::configure().compile_fds(descriptors)?;
    }
    Ok(())
}
