//! Compiles the .proto files with a vendored `protoc`, so no system install is needed,
//! and writes one descriptor set for gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/chat/events/v1/events.proto",
    "proto/chat/auth/v1/auth.proto",
    "proto/chat/history/v1/history.proto",
    "proto/chat/presence/v1/presence.proto",
    "proto/chat/notification/v1/notification.proto",
    "proto/chat/media/v1/media.proto",
    "proto/chat/admin/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // File bytes pass through as shared buffers, not copied into vectors.
    config.bytes([".chat.media.v1"]);
    tonic_prost_build::configure().file_descriptor_set_path(out_dir.join("chat_descriptor.bin")).compile_with_config(
        config,
        PROTOS,
        &["proto"],
    )?;
    Ok(())
}
