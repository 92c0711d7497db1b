//! Generates the gRPC code for `proto/` with protox, a protobuf compiler in Rust, so building
//! Weir needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/weir/v1alpha1/discovery.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // Payloads are shared by every stream that sends them: `Bytes`, not a copy per node.
        .bytes(".weir.v1alpha1.ConfigUpdate.payload")
        .compile_fds(descriptors)?;
    Ok(())
}
