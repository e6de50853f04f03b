//! The gateway's part of offline delivery. Notification queues messages for
//! users with no device connected; when a socket connects, its `ready` frame
//! says how many were waiting, and once the socket has them (live or in its
//! catch-up) notification drops them from the queue and stops any push.

use std::time::Duration;

use chat_proto::notification::v1::{AckDeliveredRequest, ListPendingRequest};

use chat_common::grpc::Channel;
use chat_proto::notification::v1::notification_service_client::NotificationServiceClient;

/// `ready` waits no longer than this for the count.
const COUNT_TIMEOUT: Duration = Duration::from_secs(1);

/// How many deliveries wait for the user; `None` when notification does not
/// answer in time (`ready` is not held up for it).
pub async fn waiting(notification: &NotificationServiceClient<Channel>, user_id: &str) -> Option<usize> {
    let request = ListPendingRequest { user_id: user_id.to_owned(), count_only: true };
    match tokio::time::timeout(COUNT_TIMEOUT, notification.clone().list_pending(request)).await {
        Ok(Ok(reply)) => Some(reply.into_inner().count as usize),
        Ok(Err(status)) => {
            tracing::warn!(code = ?status.code(), "cannot count waiting deliveries");
            None
        }
        Err(_) => {
            tracing::warn!("counting waiting deliveries timed out");
            None
        }
    }
}

/// The user's devices have everything up to `through_stream_seq` (fire and forget:
/// a delivery left behind is dropped at the next connect, or by the pusher).
pub fn delivered(notification: &NotificationServiceClient<Channel>, user_id: &str, through_stream_seq: u64) {
    let mut notification = notification.clone();
    let request = AckDeliveredRequest { user_id: user_id.to_owned(), through_stream_seq };
    tokio::spawn(async move {
        if let Err(status) = notification.ack_delivered(request).await {
            tracing::warn!(code = ?status.code(), "cannot acknowledge delivered messages");
        }
    });
}
