//! Generated protobuf types and gRPC stubs for every internal contract:
//! one package per service (`chat.<service>.v1`) plus the stream events.

// The generated code is not ours to restyle.
#![allow(clippy::all)]

pub mod events {
    pub mod v1 {
        tonic::include_proto!("chat.events.v1");
    }
}
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("chat.auth.v1");
    }
}
pub mod history {
    pub mod v1 {
        tonic::include_proto!("chat.history.v1");
    }
}
pub mod presence {
    pub mod v1 {
        tonic::include_proto!("chat.presence.v1");
    }
}
pub mod notification {
    pub mod v1 {
        tonic::include_proto!("chat.notification.v1");
    }
}
pub mod media {
    pub mod v1 {
        tonic::include_proto!("chat.media.v1");
    }
}
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("chat.admin.v1");
    }
}

mod words;

/// The descriptor set of every package above, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("chat_descriptor");
