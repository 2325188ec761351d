//! Compiles the .proto files with protox (pure Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/strata/replication.proto", "proto/strata/admin.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        // The CLI prints admin answers as JSON (`--json`).
        .type_attribute(".strata.admin.v1", "#[derive(serde::Serialize)]")
        .field_attribute(
            ".strata.admin.v1.Topic.id",
            "#[serde(serialize_with = \"crate::uuid_bytes\")]",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
