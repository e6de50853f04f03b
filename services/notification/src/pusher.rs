//! Decides when a waiting delivery is worth a push, and pushes it. A durable
//! consumer on the pending bucket's stream hands each queued delivery to one
//! instance. The delivery first waits out the coalescing window; then, if it
//! is still waiting (no read marker passed it, no device drained it) and the
//! user still has no device connected, one notification covers every
//! delivery of the user not covered before ("3 new messages from Alice").
//!
//! Exactly one notification per batch: the instance that covers a batch
//! records a claim for the user by compare-and-set before sending. The user's
//! entry in the claims bucket says how far the user's deliveries are covered
//! and lists every claimed notification not yet finished; each is sent by
//! the trigger that claimed it, and leaves the list once sent to every
//! subscription (or dead-lettered). A later claim therefore never hides an
//! earlier one still being retried: a retried trigger finds its own
//! notification in the list and resends the same payload to the
//! subscriptions not yet marked sent; so does a trigger retried because its
//! claim's write went unanswered (nats-server lost mid-write: the claim may be
//! stored, and only its trigger sends it).
//!
//! A claim covers the user's waiting deliveries up to a revision, so it is
//! made only from a view that holds all of them: every instance queues
//! deliveries, and this instance's view learns of the others' through the
//! bucket's watch, in revision order. A trigger waits until the view has
//! reached its own revision, and the batch takes nothing past what the watch
//! has brought; otherwise a delivery another instance queued a moment earlier
//! would count as covered without having been in any notification.
//!
//! Before claiming, and again before each send, the pusher confirms with
//! history that the user is still a member of every conversation the
//! notification previews, and with auth which of the user's devices are still
//! logged in: only their subscriptions are sent to (the others are removed).
//! Either check failing makes the push wait, never go out unchecked; as the
//! checks come before the claim, deliveries that arrive meanwhile are not
//! covered by a notification stuck waiting, and once the dependency answers
//! again the next retry covers them all. Such a wait is retried every few
//! seconds at most and is not an attempt: only failed sends count. Failed
//! sends are retried with exponential backoff (a NAK with delay); after the
//! last attempt each failed subscription gets a dead letter. 404 or 410
//! removes the subscription. An endpoint the policy refuses now
//! (`endpoint`) gets no request and a dead letter at once.

use std::collections::{BTreeSet, HashMap, HashSet};
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

/// Longest wait before a push held up by a dependency (history or auth not
/// answering, JetStream not answering a claim) is tried again: short, so
/// pushes resume within seconds of the dependency coming back. Such waits are
/// not push attempts.
const DEPENDENCY_RETRY_MAX: Duration = Duration::from_secs(2);
/// Shortest such wait (however small the configured retry base).
const DEPENDENCY_RETRY_MIN: Duration = Duration::from_millis(100);
/// Compare-and-set tries on a user's claims entry before the trigger retries later.
const CAS_TRIES: usize = 10;
/// How long a trigger waits for this instance's view of the pending
/// deliveries to reach it before it is retried later.
const INDEX_LAG_LIMIT: Duration = Duration::from_secs(2);

/// A user's entry in the claims bucket (key: the user id): how far the user's
/// deliveries are covered, and the notifications claimed but not finished.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Claims {
    /// Every delivery of the user up to this pending-bucket revision is
    /// covered by a notification.
    through_revision: u64,
    /// Claimed notifications not yet sent to every subscription (nor
    /// dead-lettered), each sent and retried by the trigger that claimed it.
    #[serde(default)]
    unfinished: Vec<Claim>,
}

/// One claimed notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    /// The notification's id: the idempotency key receivers see.
    notification_id: String,
    /// The pending keys it covers (a retry is pointless once all are gone).
    covered: Vec<String>,
    /// The JSON sent, identical on every attempt.
    payload: String,
    /// Send attempts that failed so far; waiting for a dependency is not one.
    #[serde(default)]
    failed_attempts: u32,
}

impl Claims {
    /// Reads a stored entry, also one of the earlier format (a single claim,
    /// taken as unfinished: only its trigger knows, and it finishes it).
    fn parse(value: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Single {
            through_revision: u64,
            notification_id: String,
            covered: Vec<String>,
            payload: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Single(Single),
            Current(Claims),
        }
        Some(match serde_json::from_slice(value).ok()? {
            Stored::Single(c) => Claims {
                through_revision: c.through_revision,
                unfinished: vec![Claim {
                    notification_id: c.notification_id,
                    covered: c.covered,
                    payload: c.payload,
                    failed_attempts: 0,
                }],
            },
            Stored::Current(claims) => claims,
        })
    }

    fn find(&self, notification_id: &str) -> Option<&Claim> {
        self.unfinished.iter().find(|c| c.notification_id == notification_id)
    }
}

/// What the checks before a push found.
enum Checked {
    /// Still a member of every conversation; these devices are logged in.
    Allowed(HashSet<String>),
    /// No longer a member of some conversation (its deliveries are dropped).
    NotMember,
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
        let delivered = info.delivered.max(1) as u32;
        let queued_at = info.published;

        // Let more messages arrive, so they share one notification.
        let waited = time_since(queued_at);
        if waited < self.settings.coalesce {
            tokio::time::sleep(self.settings.coalesce - waited).await;
        }
        let _ = message.ack_with(AckKind::Progress).await;
        // A notification covers every waiting delivery up to a revision, so
        // this instance's view must hold all of them: other instances queue
        // deliveries too, and this view learns of theirs through the watch.
        if !self.pending.index.seen_up_to(revision, INDEX_LAG_LIMIT).await {
            tracing::warn!(
                revision,
                seen = self.pending.index.seen(),
                "the pending deliveries' view lags; the push waits"
            );
            return self.wait(delivered);
        }

        let user_id = delivery.user_id.clone();
        let notification_id = format!("{user_id}-{revision}");
        let key = crate::pending::key_of(&delivery);
        // Looked at again when another instance claims between our read and write.
        for _ in 0..CAS_TRIES {
            let (claims_revision, claims) = match self.claims_of(&user_id).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the user's push claims");
                    return self.wait(delivered);
                }
            };
            let connected =
                self.sockets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_connected(&user_id);
            if let Some(ours) = claims.find(&notification_id).cloned() {
                // A retry of a claimed notification: finish it.
                if connected {
                    // A connected device gets everything live or in its catch-up.
                    self.pending.remove(&user_id, |_| true).await;
                    return self.finish(&user_id, &notification_id).await;
                }
                let still_waiting = self.still_waiting(&user_id);
                if !ours.covered.iter().any(|k| still_waiting.contains(k)) {
                    return self.finish(&user_id, &notification_id).await; // all read or drained meanwhile
                }
                return self.push(&user_id, &ours, None, delivered).await;
            }
            if claims.through_revision >= revision {
                return Verdict::Done; // another notification covers this one
            }
            if connected {
                self.pending.remove(&user_id, |_| true).await;
                return Verdict::Done;
            }
            let still_waiting = self.still_waiting(&user_id);
            if !still_waiting.contains(&key) {
                return Verdict::Done; // read or drained during the window
            }
            // Only what the watch has brought: everything under it is known.
            let seen = self.pending.index.seen();
            let batch: Vec<(String, u64, PendingDelivery)> = self
                .pending
                .index
                .of(&user_id)
                .into_iter()
                .filter(|(_, revision, _)| *revision > claims.through_revision && *revision <= seen)
                .collect();
            // Checked before the claim: a notification that has to wait for a
            // dependency covers nothing yet, so whichever trigger finds the
            // dependency back first covers everything waiting.
            let to_send = !self.subscriptions.of(&user_id).is_empty();
            let active = if to_send {
                match self.check(&user_id, batch.iter().map(|(key, _, _)| key.as_str()), delivered).await {
                    Some(Checked::Allowed(active)) => Some(active),
                    // Those deliveries are dropped now; look again at the rest.
                    Some(Checked::NotMember) => continue,
                    None => return self.wait(delivered),
                }
            } else {
                None
            };
            match self.claim(&user_id, &notification_id, batch, claims, claims_revision, &still_waiting, to_send).await
            {
                Ok(Some(claim)) => {
                    return match active {
                        Some(active) => self.push(&user_id, &claim, Some(active), delivered).await,
                        None => Verdict::Done, // nowhere to send it
                    };
                }
                Ok(None) => continue, // another instance claimed first: does it cover this one?
                Err(e) => {
                    // It may be stored all the same: the retry finds it as its own.
                    tracing::warn!(error = %e, "cannot record the push claim; retrying");
                    return self.wait(delivered);
                }
            }
        }
        self.wait(delivered)
    }

    /// The keys of the user's waiting deliveries.
    fn still_waiting(&self, user_id: &str) -> BTreeSet<String> {
        self.pending.index.of(user_id).into_iter().map(|(key, _, _)| key).collect()
    }

    /// The user's claims entry and its revision (0 if there is none).
    ///
    /// # Errors
    /// When JetStream does not answer.
    async fn claims_of(&self, user_id: &str) -> Result<(u64, Claims), kv::EntryError> {
        Ok(match self.claims.entry(user_id).await? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                (entry.revision, Claims::parse(&entry.value).unwrap_or_default())
            }
            Some(entry) => (entry.revision, Claims::default()),
            None => (0, Claims::default()),
        })
    }

    /// Covers `batch` (the user's waiting deliveries after the entry's
    /// `through_revision`) with one notification, recorded by compare-and-set
    /// on the entry read at `claims_revision`; listed as unfinished when it
    /// is `to_send`. `None` when another instance wrote the entry first.
    ///
    /// # Errors
    /// When JetStream does not answer: the claim may or may not be stored,
    /// so the trigger must be retried (acknowledging it could leave a stored
    /// claim that nobody sends).
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        user_id: &str,
        notification_id: &str,
        batch: Vec<(String, u64, PendingDelivery)>,
        mut claims: Claims,
        claims_revision: u64,
        still_waiting: &BTreeSet<String>,
        to_send: bool,
    ) -> Result<Option<Claim>, kv::UpdateError> {
        let Some(through_revision) = batch.iter().map(|(_, revision, _)| *revision).max() else { return Ok(None) };
        // Only a claim to send carries a payload: its badge counts every unread
        // message of the user, which grows with them.
        let payload = if to_send { self.payload(user_id, notification_id, &batch).await } else { String::new() };
        let claim = Claim {
            notification_id: notification_id.to_owned(),
            covered: batch.into_iter().map(|(key, _, _)| key).collect(),
            payload,
            failed_attempts: 0,
        };
        claims.through_revision = through_revision;
        // One whose deliveries are all read or drained is past sending (its
        // trigger may be gone with them).
        claims.unfinished.retain(|c| c.covered.iter().any(|k| still_waiting.contains(k)));
        if to_send {
            claims.unfinished.push(claim.clone());
        }
        let value = serde_json::to_vec(&claims).expect("claims serialise");
        match self.claims.update(user_id, value.into(), claims_revision).await {
            Ok(_) => Ok(Some(claim)),
            Err(e) if chat_common::nats::lost_a_race(&e) => {
                tracing::debug!(error = %e, "another instance claimed first");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Changes the user's claims entry with `change` (which says whether it
    /// changed anything), by compare-and-set, reading it again on a conflict.
    ///
    /// # Errors
    /// When JetStream does not answer, or the entry keeps changing under us.
    async fn update_claims(
        &self,
        user_id: &str,
        change: impl Fn(&mut Claims) -> bool,
    ) -> Result<(), async_nats::Error> {
        for _ in 0..CAS_TRIES {
            let (revision, mut claims) = self.claims_of(user_id).await?;
            if !change(&mut claims) {
                return Ok(());
            }
            let value = serde_json::to_vec(&claims).expect("claims serialise");
            match self.claims.update(user_id, value.into(), revision).await {
                Ok(_) => return Ok(()),
                Err(e) if chat_common::nats::lost_a_race(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err("the push claims kept changing".into())
    }

    /// Takes a notification off the user's unfinished list: it is sent (or
    /// dead-lettered, or no longer worth sending). Retried later if that
    /// cannot be recorded (the retry sends nothing already marked sent).
    async fn finish(&self, user_id: &str, notification_id: &str) -> Verdict {
        let finished = self
            .update_claims(user_id, |claims| {
                let before = claims.unfinished.len();
                claims.unfinished.retain(|c| c.notification_id != notification_id);
                claims.unfinished.len() != before
            })
            .await;
        match finished {
            Ok(()) => Verdict::Done,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a finished push; retrying");
                Verdict::RetryIn(self.settings.retry_base.max(DEPENDENCY_RETRY_MIN))
            }
        }
    }

    /// How long a push waits for a dependency before it is tried again: the
    /// retry base, doubling with each delivery, at most `DEPENDENCY_RETRY_MAX`.
    fn wait(&self, delivered: u32) -> Verdict {
        let doubled = 2u32.saturating_pow(delivered.saturating_sub(1).min(8));
        let delay = self.settings.retry_base.saturating_mul(doubled);
        Verdict::RetryIn(delay.clamp(DEPENDENCY_RETRY_MIN, DEPENDENCY_RETRY_MAX))
    }

    /// Asks history whether the user is still a member of every conversation
    /// of `keys` (pending keys), and auth which of the user's devices are
    /// logged in. `None` when either cannot answer (logged; the push waits).
    async fn check(&self, user_id: &str, keys: impl Iterator<Item = &str>, delivered: u32) -> Option<Checked> {
        let conversations: BTreeSet<&str> = keys.filter_map(|key| key.split('.').nth(1)).collect();
        // Logged once per trigger at warn: every waiting trigger asks again.
        let log = |what: &str, e: &tonic::Status| {
            if delivered <= 1 {
                tracing::warn!(error = %e, "cannot confirm the user's {what}; the push waits");
            } else {
                tracing::debug!(error = %e, "cannot confirm the user's {what}; the push waits");
            }
        };
        match self.still_member_of_all(user_id, conversations).await {
            Ok(true) => {}
            Ok(false) => return Some(Checked::NotMember),
            Err(e) => {
                log("membership", &e);
                return None;
            }
        }
        match crate::revocations::active_devices(&self.auth, user_id).await {
            Ok(active) => Some(Checked::Allowed(active)),
            Err(e) => {
                log("devices", &e);
                None
            }
        }
    }

    /// Sends the claim's notification to every subscription not yet sent to,
    /// if the user is still a member of every conversation it previews, and
    /// only to subscriptions of devices still logged in (`active`, when just
    /// asked; else asked now).
    #[tracing::instrument(name = "notification.push", skip_all, fields(attempt = claim.failed_attempts + 1))]
    async fn push(&self, user_id: &str, claim: &Claim, active: Option<HashSet<String>>, delivered: u32) -> Verdict {
        let subscriptions = self.subscriptions.of(user_id);
        if subscriptions.is_empty() {
            return self.finish(user_id, &claim.notification_id).await;
        }
        let active = match active {
            Some(active) => active,
            None => match self.check(user_id, claim.covered.iter().map(String::as_str), delivered).await {
                Some(Checked::Allowed(active)) => active,
                Some(Checked::NotMember) => return self.finish(user_id, &claim.notification_id).await,
                None => return self.wait(delivered),
            },
        };
        let attempt = claim.failed_attempts + 1;
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
            return self.finish(user_id, &claim.notification_id).await;
        }
        if attempt < self.settings.attempts {
            let delay = self.settings.retry_base * 2u32.saturating_pow(attempt - 1);
            tracing::info!(attempt, failed = failed.len(), ?delay, "push failed; retrying");
            let notification_id = claim.notification_id.as_str();
            let counted = self
                .update_claims(user_id, |claims| {
                    let ours = claims.unfinished.iter_mut().find(|c| c.notification_id == notification_id);
                    ours.map(|c| c.failed_attempts = c.failed_attempts.max(attempt)).is_some()
                })
                .await;
            if let Err(e) = counted {
                // The attempt is made again as the same one: never fewer attempts than promised.
                tracing::warn!(error = %e, "cannot record a failed push attempt");
            }
            return Verdict::RetryIn(delay);
        }
        for (subscription, reason) in failed {
            tracing::warn!(attempts = attempt, "push failed for good; dead letter recorded");
            self.dead_letter(user_id, claim, &subscription, attempt, reason).await;
        }
        self.finish(user_id, &claim.notification_id).await
    }

    /// Whether the user is still a member of every one of `conversations`
    /// (those a notification previews), asked of history (the record of
    /// membership) before claiming and at send time,
    /// so a removal takes effect even when its membership snapshot never
    /// reached this service. The deliveries of a conversation the user left
    /// are dropped; nothing of the batch is pushed.
    ///
    /// # Errors
    /// When history cannot answer (the push waits: fail closed).
    async fn still_member_of_all(&self, user_id: &str, conversations: BTreeSet<&str>) -> Result<bool, tonic::Status> {
        let mut member_of_all = true;
        for conversation_id in conversations {
            let request = GetConversationRequest {
                conversation_id: conversation_id.to_owned(),
                user_id: user_id.to_owned(),
                members_only: true,
            };
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
        let request = ListConversationsRequest { user_id: user_id.to_owned(), ..Default::default() };
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
    fn a_claim_of_the_earlier_format_stays_unfinished() {
        let single = br#"{"through_revision":7,"notification_id":"u-5","covered":["u.c.1"],"payload":"{}"}"#;
        let claims = Claims::parse(single).expect("parses");
        assert_eq!(claims.through_revision, 7);
        assert_eq!(claims.find("u-5").map(|c| c.covered.clone()), Some(vec!["u.c.1".to_owned()]));

        let current = serde_json::to_vec(&claims).expect("serialises");
        let again = Claims::parse(&current).expect("parses");
        assert_eq!((again.through_revision, again.unfinished.len()), (7, 1));
        assert!(Claims::parse(b"not json").is_none());
    }

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
