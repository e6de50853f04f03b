//! Decides when a waiting delivery is worth a push, and pushes it. A durable
//! consumer on the pending bucket's stream hands each queued delivery to one
//! instance. The delivery first waits out the coalescing window; then, if it
//! is still waiting (no read marker passed it, no device drained it) and the
//! user still has no device connected, one notification covers every
//! delivery of the user not covered before ("3 new messages from Alice").
//!
//! Exactly one notification per batch: the instance that covers a batch
//! records a claim for the user by compare-and-set before sending. A claim
//! names its notification id (the idempotency key), and a redelivered trigger
//! finds its own claim and resends the same payload to the subscriptions not
//! yet marked sent; so does a trigger retried because its claim's write went
//! unanswered (nats-server lost mid-write: the claim may be stored, and only
//! its trigger sends it). Failed sends are retried with exponential backoff
//! (a NAK with delay); after the last attempt each failed subscription gets a
//! dead letter. 404 or 410 removes the subscription.
//!
//! Before sending, the pusher confirms with history that the user is still a
//! member of every conversation the notification previews, and with auth
//! which of the user's devices are still logged in: only their subscriptions
//! are sent to (the others are removed). Either check failing makes the push
//! wait, never go out unchecked. An endpoint the policy refuses now
//! (`endpoint`) gets no request and a dead letter at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, kv};
use chat_common::grpc::Channel;
use chat_common::shutdown::CancellationToken;
use chat_common::sockets::SocketIndex;
use chat_proto::auth::v1::GetUserRequest;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::history::v1::{GetConversationRequest, ListConversationsRequest};
use chat_proto::notification::v1::push_subscription::Target;
use chat_proto::notification::v1::{DeadLetter, PendingDelivery, PushSubscription};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::buckets::PENDING;
use crate::pending::Pending;
use crate::send::{Outcome, Sender};
use crate::subscriptions::Subscriptions;

pub const CONSUMER: &str = "pusher";
/// Deliveries being decided or pushed at once by one instance.
const IN_FLIGHT: usize = 64;
const NAMES_CACHED: usize = 10_000;

/// Who covers a user's deliveries: stored in the claims bucket under the user.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    /// Every delivery of the user up to this pending-bucket revision is covered.
    through_revision: u64,
    /// The notification's id: the idempotency key receivers see.
    notification_id: String,
    /// The pending keys it covers (a retry is pointless once all are gone).
    covered: Vec<String>,
    /// The JSON sent, identical on every attempt.
    payload: String,
}

pub struct Settings {
    pub coalesce: Duration,
    pub attempts: u32,
    pub retry_base: Duration,
    pub ack_wait: Duration,
}

pub struct Pusher {
    pub pending: Arc<Pending>,
    pub claims: kv::Store,
    pub sent: kv::Store,
    pub dead: kv::Store,
    pub subscriptions: Arc<Subscriptions>,
    pub sockets: Arc<Mutex<SocketIndex>>,
    pub sender: Arc<Sender>,
    pub auth: AuthServiceClient<Channel>,
    pub history: HistoryServiceClient<Channel>,
    pub settings: Settings,
    names: Mutex<HashMap<String, String>>,
}

/// What to do with a consumed delivery.
enum Verdict {
    Done,
    RetryIn(Duration),
}

impl Pusher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pending: Arc<Pending>,
        buckets: &crate::buckets::Buckets,
        subscriptions: Arc<Subscriptions>,
        sockets: Arc<Mutex<SocketIndex>>,
        sender: Arc<Sender>,
        auth: AuthServiceClient<Channel>,
        history: HistoryServiceClient<Channel>,
        settings: Settings,
    ) -> Self {
        Self {
            pending,
            claims: buckets.claims.clone(),
            sent: buckets.sent.clone(),
            dead: buckets.dead.clone(),
            subscriptions,
            sockets,
            sender,
            auth,
            history,
            settings,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// # Errors
    /// When the consumer cannot be created.
    pub async fn consumer(&self, js: &async_nats::jetstream::Context) -> Result<PullConsumer, async_nats::Error> {
        let stream = js.get_stream(format!("KV_{PENDING}")).await?;
        Ok(stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.to_owned()),
                    filter_subject: format!("$KV.{PENDING}.>"),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.settings.ack_wait,
                    deliver_policy: DeliverPolicy::All,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await?)
    }

    /// Takes deliveries from `consumer` until `shutdown`, deciding up to
    /// `IN_FLIGHT` at once, all within this task.
    pub async fn run(self: Arc<Self>, consumer: PullConsumer, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut messages = match consumer.stream().max_messages_per_batch(IN_FLIGHT).messages().await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the pending deliveries; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let mut working = FuturesUnordered::new();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    Some(()) = working.next(), if !working.is_empty() => {}
                    next = messages.next(), if working.len() < IN_FLIGHT => match next {
                        Some(Ok(message)) => working.push(self.clone().handle(message)),
                        Some(Err(e)) => tracing::warn!(error = %e, "pusher consumer hiccup"),
                        None => break,
                    },
                }
            }
        }
    }

    async fn handle(self: Arc<Self>, message: async_nats::jetstream::Message) {
        let span = tracing::info_span!("notification.deliver", otel.kind = "consumer");
        chat_common::nats::follow_trace_context(&span, message.headers.as_ref());
        let verdict = self.decide(&message).instrument(span).await;
        let ack = match verdict {
            Verdict::Done => AckKind::Ack,
            Verdict::RetryIn(delay) => AckKind::Nak(Some(delay)),
        };
        if let Err(e) = message.ack_with(ack).await {
            tracing::warn!(error = %e, "cannot acknowledge a pending delivery");
        }
    }

    async fn decide(&self, message: &async_nats::jetstream::Message) -> Verdict {
        let removal = message
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
        let Ok(info) = message.info() else { return Verdict::Done };
        let Ok(delivery) = PendingDelivery::decode(message.payload.as_ref()) else { return Verdict::Done };
        if removal {
            return Verdict::Done;
        }
        let revision = info.stream_sequence;
        let attempt = info.delivered.max(1) as u32;
        let queued_at = info.published;

        // Let more messages arrive, so they share one notification.
        let waited = time_since(queued_at);
        if waited < self.settings.coalesce {
            tokio::time::sleep(self.settings.coalesce - waited).await;
        }
        let _ = message.ack_with(AckKind::Progress).await;

        let user_id = delivery.user_id.clone();
        let notification_id = format!("{user_id}-{revision}");
        let claim = match self.claims.entry(&user_id).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the user's push claim");
                return Verdict::RetryIn(self.settings.retry_base);
            }
        };
        let (claim_revision, claim) = match claim {
            Some(entry) if entry.operation == kv::Operation::Put => {
                (entry.revision, serde_json::from_slice::<Claim>(&entry.value).ok())
            }
            Some(entry) => (entry.revision, None),
            None => (0, None),
        };
        let ours = claim.as_ref().filter(|c| c.notification_id == notification_id).cloned();
        if ours.is_none() && claim.as_ref().is_some_and(|c| c.through_revision >= revision) {
            return Verdict::Done; // another notification covers this one
        }

        let still_waiting: BTreeSet<String> = self.pending.index.of(&user_id).into_iter().map(|(k, _, _)| k).collect();
        if self.sockets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_connected(&user_id) {
            // A connected device gets everything live or in its catch-up.
            self.pending.remove(&user_id, |_| true).await;
            return Verdict::Done;
        }
        let claim = match ours {
            Some(claim) if claim.covered.iter().any(|k| still_waiting.contains(k)) => claim,
            Some(_) => return Verdict::Done, // all read or drained meanwhile
            None => {
                let key = crate::pending::key_of(&delivery);
                if !still_waiting.contains(&key) {
                    return Verdict::Done; // read or drained during the window
                }
                let after = claim.as_ref().map_or(0, |c| c.through_revision);
                match self.claim(&user_id, &notification_id, after, claim_revision).await {
                    Ok(Some(claim)) => claim,
                    Ok(None) => return Verdict::Done,
                    Err(e) => {
                        // It may be stored all the same: the retry finds it as its own.
                        tracing::warn!(error = %e, "cannot record the push claim; retrying");
                        return Verdict::RetryIn(self.settings.retry_base);
                    }
                }
            }
        };
        self.push(&user_id, &claim, attempt).await
    }

    /// Covers the user's waiting deliveries after `after` with one
    /// notification, recorded by compare-and-set. `None` when another
    /// instance claimed first (its notification covers these deliveries).
    ///
    /// # Errors
    /// When JetStream does not answer: the claim may or may not be stored,
    /// so the trigger must be retried (acknowledging it could leave a stored
    /// claim that nobody sends).
    async fn claim(
        &self,
        user_id: &str,
        notification_id: &str,
        after: u64,
        claim_revision: u64,
    ) -> Result<Option<Claim>, kv::UpdateError> {
        let batch: Vec<(String, u64, PendingDelivery)> =
            self.pending.index.of(user_id).into_iter().filter(|(_, revision, _)| *revision > after).collect();
        let Some(through_revision) = batch.iter().map(|(_, revision, _)| *revision).max() else { return Ok(None) };
        let payload = self.payload(user_id, notification_id, &batch).await;
        let claim = Claim {
            through_revision,
            notification_id: notification_id.to_owned(),
            covered: batch.into_iter().map(|(key, _, _)| key).collect(),
            payload,
        };
        let value = serde_json::to_vec(&claim).expect("a claim serialises");
        match self.claims.update(user_id, value.into(), claim_revision).await {
            Ok(_) => Ok(Some(claim)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::debug!(error = %e, "another instance claimed these deliveries");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends the claim's notification to every subscription not yet sent to,
    /// if the user is still a member of every conversation it previews, and
    /// only to subscriptions of devices still logged in.
    #[tracing::instrument(name = "notification.push", skip_all, fields(attempt))]
    async fn push(&self, user_id: &str, claim: &Claim, attempt: u32) -> Verdict {
        let retry_later = Verdict::RetryIn(self.settings.retry_base * 2u32.saturating_pow(attempt.min(8) - 1));
        let subscriptions = self.subscriptions.of(user_id);
        if subscriptions.is_empty() {
            return Verdict::Done;
        }
        match self.still_member_of_all(user_id, claim).await {
            Ok(true) => {}
            Ok(false) => return Verdict::Done,
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm the user's membership; the push waits");
                return retry_later;
            }
        }
        let active = match crate::revocations::active_devices(&self.auth, user_id).await {
            Ok(active) => active,
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm the user's devices; the push waits");
                return retry_later;
            }
        };
        let mut failed = Vec::new();
        for subscription in subscriptions {
            if !active.contains(&subscription.device_id) {
                tracing::info!("push subscription of a revoked device; removing it");
                count_push("revoked");
                let _ = self.subscriptions.remove(user_id, &subscription.subscription_id).await;
                continue;
            }
            let sent_key = format!("{}.{}", claim.notification_id, subscription.subscription_id);
            if matches!(self.sent.get(&sent_key).await, Ok(Some(_))) {
                continue;
            }
            let outcome = self.sender.send(&subscription, &claim.notification_id, claim.payload.as_bytes()).await;
            count_push(match outcome {
                Outcome::Delivered => "delivered",
                Outcome::Gone => "gone",
                Outcome::Failed(_) => "failed",
                Outcome::Refused(_) => "refused",
            });
            match outcome {
                Outcome::Delivered => {
                    if let Err(e) = self.sent.put(&sent_key, Default::default()).await {
                        tracing::warn!(error = %e, "cannot record a sent push");
                    }
                }
                Outcome::Gone => {
                    tracing::info!("push subscription gone; removing it");
                    let _ = self.subscriptions.remove(user_id, &subscription.subscription_id).await;
                }
                Outcome::Refused(reason) => {
                    // Retrying cannot help while the policy stands.
                    tracing::warn!(reason, "push endpoint refused by policy; nothing sent, dead letter recorded");
                    self.dead_letter(user_id, claim, &subscription, attempt, format!("refused: {reason}")).await;
                }
                Outcome::Failed(reason) => failed.push((subscription, reason)),
            }
        }
        if failed.is_empty() {
            return Verdict::Done;
        }
        if attempt < self.settings.attempts {
            let delay = self.settings.retry_base * 2u32.saturating_pow(attempt - 1);
            tracing::info!(attempt, failed = failed.len(), ?delay, "push failed; retrying");
            return Verdict::RetryIn(delay);
        }
        for (subscription, reason) in failed {
            tracing::warn!(attempts = attempt, "push failed for good; dead letter recorded");
            self.dead_letter(user_id, claim, &subscription, attempt, reason).await;
        }
        Verdict::Done
    }

    /// Whether the user is still a member of every conversation the claim
    /// previews, asked of history (the record of membership) at send time,
    /// so a removal takes effect even when its membership snapshot never
    /// reached this service. The deliveries of a conversation the user left
    /// are dropped; nothing of the batch is pushed.
    ///
    /// # Errors
    /// When history cannot answer (the push waits: fail closed).
    async fn still_member_of_all(&self, user_id: &str, claim: &Claim) -> Result<bool, tonic::Status> {
        let mut conversations: Vec<&str> = claim.covered.iter().filter_map(|key| key.split('.').nth(1)).collect();
        conversations.sort_unstable();
        conversations.dedup();
        let mut member_of_all = true;
        for conversation_id in conversations {
            let request =
                GetConversationRequest { conversation_id: conversation_id.to_owned(), user_id: user_id.to_owned() };
            match self.history.clone().get_conversation(request).await {
                Ok(_) => {}
                Err(status) if matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::NotFound) => {
                    tracing::info!("no longer a member; the conversation's deliveries are dropped unpushed");
                    count_push("not_member");
                    self.pending.remove(user_id, |d| d.conversation_id == conversation_id).await;
                    member_of_all = false;
                }
                Err(status) => return Err(status),
            }
        }
        Ok(member_of_all)
    }

    async fn dead_letter(
        &self,
        user_id: &str,
        claim: &Claim,
        subscription: &PushSubscription,
        attempts: u32,
        reason: String,
    ) {
        let target = match &subscription.target {
            Some(Target::WebPush(t)) => t.endpoint.clone(),
            Some(Target::Webhook(t)) => t.url.clone(),
            None => String::new(),
        };
        let letter = DeadLetter {
            user_id: user_id.to_owned(),
            subscription_id: subscription.subscription_id.clone(),
            notification_id: claim.notification_id.clone(),
            attempts,
            last_error: reason,
            failed_at_ms: chat_common::time::now_ms(),
            target,
        };
        let key = format!("{user_id}.{}.{}", claim.notification_id, subscription.subscription_id);
        count_push("dead_letter");
        if let Err(e) = self.dead.put(&key, letter.encode_to_vec().into()).await {
            tracing::error!(error = %e, "cannot record a dead letter");
        }
    }

    /// The notification JSON for a batch of deliveries.
    async fn payload(&self, user_id: &str, notification_id: &str, batch: &[(String, u64, PendingDelivery)]) -> String {
        let mut senders: Vec<&str> = Vec::new();
        for (_, _, d) in batch {
            if !senders.contains(&d.sender_id.as_str()) {
                senders.push(&d.sender_id);
            }
        }
        let mut names = Vec::with_capacity(senders.len());
        for sender in &senders {
            names.push(self.name_of(sender).await);
        }
        let mut conversations: Vec<&str> = batch.iter().map(|(_, _, d)| d.conversation_id.as_str()).collect();
        conversations.sort_unstable();
        conversations.dedup();
        let (title, body) = text(&names, batch.iter().map(|(_, _, d)| d.preview.as_str()).collect());
        let badge = self.total_unread(user_id).await;
        serde_json::json!({
            "id": notification_id,
            "user_id": user_id,
            "title": title,
            "body": body,
            "count": batch.len(),
            "badge": badge,
            "conversation_ids": conversations,
        })
        .to_string()
    }

    async fn name_of(&self, user_id: &str) -> String {
        if let Some(name) = self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(user_id) {
            return name.clone();
        }
        let name = match self.auth.clone().get_user(GetUserRequest { user_id: user_id.to_owned() }).await {
            Ok(user) => {
                let user = user.into_inner();
                if user.display_name.is_empty() { user.username } else { user.display_name }
            }
            Err(_) => return "Someone".to_owned(),
        };
        let mut names = self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.len() >= NAMES_CACHED {
            names.clear();
        }
        names.insert(user_id.to_owned(), name.clone());
        name
    }

    /// Unread messages over all the user's conversations (the badge), if history answers.
    async fn total_unread(&self, user_id: &str) -> Option<u64> {
        let request = ListConversationsRequest { user_id: user_id.to_owned(), ids_only: false };
        let reply = self.history.clone().list_conversations(request).await.ok()?;
        Some(reply.into_inner().conversations.iter().map(|c| c.unread_count).sum())
    }
}

/// Title and body: one message shows its sender and text; several say how
/// many and from whom.
pub fn text(senders: &[String], previews: Vec<&str>) -> (String, String) {
    let first = senders.first().cloned().unwrap_or_else(|| "Someone".to_owned());
    if previews.len() == 1 {
        return (first, previews[0].to_owned());
    }
    let from = match senders {
        [] | [_] => first.clone(),
        [a, b] => format!("{a} and {b}"),
        [a, b, rest @ ..] => format!("{a}, {b} and {} others", rest.len()),
    };
    let title = if senders.len() == 1 { first } else { "New messages".to_owned() };
    (title, format!("{} new messages from {from}", previews.len()))
}

fn count_push(outcome: &'static str) {
    crate::metrics::get().pushes.get_or_create(&chat_common::metrics::label("outcome", outcome)).inc();
}

fn time_since(then: time::OffsetDateTime) -> Duration {
    let elapsed = time::OffsetDateTime::now_utc() - then;
    Duration::try_from(elapsed).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_says_who_and_how_many() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(text(&names(&["Alice"]), vec!["hi"]), ("Alice".into(), "hi".into()));
        assert_eq!(text(&names(&["Alice"]), vec!["a", "b", "c"]), ("Alice".into(), "3 new messages from Alice".into()));
        assert_eq!(text(&names(&["Alice", "Bob"]), vec!["a", "b"]).1, "2 new messages from Alice and Bob");
        assert_eq!(
            text(&names(&["A", "B", "C", "D"]), vec!["1", "2", "3", "4"]).1,
            "4 new messages from A, B and 2 others"
        );
    }
}
