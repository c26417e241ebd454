//! Generates the ExternalJWTSigner gRPC code (server and client, packages v1 and v1alpha1) from
//! proto/externaljwt, with protox instead of protoc, so the build needs no system tool.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/externaljwt/v1/api.proto",
        "proto/externaljwt/v1alpha1/api.proto",
    ];
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
