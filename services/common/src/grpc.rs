//! Serving gRPC the same way in every service: a listener bound up front (so
//! port 0 works and the bound port is known), `grpc.health.v1`, reflection for
//! `grpcurl`, and shutdown on a token.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// Binds `addr` and returns the listener with the address it really got.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Adds health (reporting `service_names` as SERVING) and reflection to `routes`.
pub fn with_health_and_reflection(mut routes: Routes, service_names: &[&str]) -> Routes {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names {
        let reporter = reporter.clone();
        let name = (*name).to_owned();
        tokio::spawn(async move {
            reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
        });
    }
    routes = routes.add_service(health);
    // Only the services this server really has are advertised; the shared
    // descriptor set describes every service of the system.
    let reflection = || {
        service_names.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health"),
            |builder, name| builder.with_service_name(*name),
        )
    };
    // Both reflection versions: grpcurl releases before 1.9 speak only v1alpha.
    routes
        .add_service(reflection().build_v1().expect("the compiled descriptor sets are valid"))
        .add_service(reflection().build_v1alpha().expect("the compiled descriptor sets are valid"))
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then drains.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
}

/// A lazily connecting channel to another service's gRPC address (`host:port`
/// or a full `http://` URL).
///
/// # Errors
/// When the address is not a valid URI.
pub fn channel(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Ok(tonic::transport::Endpoint::from_shared(uri)?
        .connect_timeout(std::time::Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect_lazy())
}
