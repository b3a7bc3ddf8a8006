//! Compiles proto/plugin.proto into the tonic client, with the protoc shipped by the
//! protoc-bin-vendored crate (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build runs the protoc named by PROTOC.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/plugin.proto");
    tonic_prost_build::configure()
        .build_server(false)
        // Chunks and bodies stay `bytes::Bytes`: no copy between the proxy and the wire.
        .bytes(".")
        .compile_protos(&["proto/plugin.proto"], &["proto"])?;
    Ok(())
}
