//! The fault harness: steady traffic through a running system while a test
//! breaks part of it, and one checker that ends every fault test.
//!
//! Traffic is what real clients do. Senders send at a steady pace over their
//! own socket and, on any failure (an `error` frame, no answer in time, a
//! dropped socket, a refused connection), send again with the same
//! `client_msg_id`, moving to the next gateway when theirs is gone. Receivers
//! (two devices per user) keep the cursor of the last frame they processed
//! and reconnect with it. One user of the group never connects and has a
//! webhook: every message to her must be pushed once.
//!
//! The checker ([`Traffic::finish`]) holds the system to protocol v1's
//! guarantees: every acked message is in history exactly once, with no seq
//! gap and nothing that was never acked; every receiver got every message of
//! its conversations exactly once and in seq order; pushes cover every message
//! for the offline user once; no consumer has work left or stuck; nothing was
//! set aside as a dead letter. It reports the recovery time (the longest
//! stretch from a sender's first failed attempt to its next success) and how
//! often clients had to retry or reconnect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use crate::client::{Api, Device};
use crate::push::PushEndpoint;

/// How long a sender waits for the answer to one attempt.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a client tries again after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long the checker waits for deliveries, pushes and queues to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The push path the offline user's webhook posts to.
const PUSH_PATH: &str = "offline";

/// The gateways clients may use (`host:port`), in order of preference. A
/// client whose gateway fails moves on to the next.
#[derive(Clone)]
pub struct Gateways(Arc<[String]>);

impl Gateways {
    pub fn new(addrs: impl IntoIterator<Item = std::net::SocketAddr>) -> Self {
        Self(addrs.into_iter().map(|a| a.to_string()).collect())
    }

    fn pick(&self, turn: usize) -> String {
        self.0[turn % self.0.len()].clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one sender saw.
#[derive(Debug, Default, Clone)]
pub struct SenderLog {
    /// (conversation id, seq, message id, client message id) of every ack.
    pub acked: Vec<(String, u64, String, String)>,
    /// Attempts that failed and were made again.
    pub retries: usize,
    /// Error frames (code and message) and failures seen, with how often.
    pub errors: BTreeMap<String, usize>,
    /// Longest time from a first failed attempt to the next success.
    pub longest_outage: Duration,
    /// Longest time one attempt waited for an answer (a hang shows here).
    pub longest_wait: Duration,
}

/// What one receiving device saw.
#[derive(Debug, Default, Clone)]
pub struct ReceiverLog {
    pub device: String,
    /// (seq, message id) per conversation, in arrival order.
    pub received: HashMap<String, Vec<(u64, String)>>,
    pub reconnects: usize,
    /// Error frames and failures seen, by kind.
    pub errors: BTreeMap<String, usize>,
    /// When each message frame arrived.
    pub arrivals: Vec<Instant>,
}

/// How the traffic was set up: who is in which conversation.
struct Cast {
    /// Each sender with the conversations it sends to.
    senders: Vec<(Device, Vec<String>)>,
    /// Each receiving device with the conversations it is in.
    receivers: Vec<(Device, Vec<String>)>,
    /// Conversations of the user who stays offline.
    offline_conversations: Vec<String>,
    /// A device of a member of each conversation, to read history with.
    readers: HashMap<String, Device>,
}

/// Traffic running against a system; see the module header.
pub struct Traffic {
    stop: CancellationToken,
    senders: Vec<tokio::task::JoinHandle<SenderLog>>,
    receivers: Vec<(tokio::task::JoinHandle<()>, Arc<Mutex<ReceiverLog>>)>,
    acked: Arc<std::sync::atomic::AtomicUsize>,
    cast: Cast,
    push: PushEndpoint,
    started: Instant,
    healed: Option<Instant>,
}

/// Settings of the traffic.
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    /// Pause between one sender's messages.
    pub interval: Duration,
    /// Prefix of user names, unique per test.
    pub label: String,
}

impl Default for TrafficOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(40),
            label: format!("f{}", &uuid::Uuid::new_v4().simple().to_string()[..6]),
        }
    }
}

impl Traffic {
    /// Registers four chatting users (two devices each receiving, one sending)
    /// and an offline one with a webhook, in two direct conversations and a
    /// group of all five, through `api`; then starts receivers and senders
    /// on `gateways`.
    pub async fn start(api: &Api, gateways: &Gateways, options: TrafficOptions) -> Self {
        let push = PushEndpoint::start().await;
        let names: Vec<String> = (0..4).map(|i| format!("{}u{i}", options.label)).collect();
        let mut users = Vec::new();
        for name in &names {
            users.push(api.new_user(name).await);
        }
        let offline = api.new_user(&format!("{}off", options.label)).await;
        let hook = json!({ "type": "webhook", "url": push.url(PUSH_PATH) });
        let (status, body) = api.post("/v1/push/subscriptions", Some(&offline.access_token), hook).await;
        assert_eq!(status, 201, "webhook subscription: {body}");
        let direct_a = api.direct(&users[0], &users[1]).await;
        let direct_b = api.direct(&users[2], &users[3]).await;
        let members: Vec<&str> = users.iter().chain([&offline]).map(|u| u.user_id.as_str()).collect();
        let (status, body) = api
            .post(
                "/v1/conversations",
                Some(&users[0].access_token),
                json!({ "kind": "group", "title": "faults", "members": members[1..] }),
            )
            .await;
        assert_eq!(status, 201, "group: {body}");
        let group = body["conversation_id"].as_str().expect("conversation_id").to_owned();
        let of_user = |i: usize| vec![if i < 2 { direct_a.clone() } else { direct_b.clone() }, group.clone()];

        let mut cast = Cast {
            senders: Vec::new(),
            receivers: Vec::new(),
            offline_conversations: vec![group.clone()],
            readers: HashMap::new(),
        };
        for (i, user) in users.iter().enumerate() {
            for _ in 0..2 {
                cast.receivers.push((api.login(&user.username).await, of_user(i)));
            }
            cast.senders.push((user.clone(), of_user(i)));
        }
        cast.readers.insert(direct_a.clone(), users[0].clone());
        cast.readers.insert(direct_b.clone(), users[2].clone());
        cast.readers.insert(group.clone(), users[0].clone());

        let stop = CancellationToken::new();
        let mut receivers = Vec::new();
        for (n, (device, _)) in cast.receivers.iter().enumerate() {
            let log = Arc::new(Mutex::new(ReceiverLog { device: device.device_id.clone(), ..Default::default() }));
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(receive(gateways.clone(), n, device.clone(), log.clone(), ready_tx));
            ready_rx.await.expect("the receiver connects");
            receivers.push((task, log));
        }
        let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let senders = cast
            .senders
            .iter()
            .enumerate()
            .map(|(n, (device, conversations))| {
                tokio::spawn(send(
                    gateways.clone(),
                    n,
                    device.clone(),
                    conversations.clone(),
                    options.interval,
                    acked.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Self { stop, senders, receivers, acked, cast, push, started: Instant::now(), healed: None }
    }

    /// Notes when the fault ended, for the report's "delivery resumed".
    pub fn healed(&mut self) {
        self.healed = Some(Instant::now());
    }

    /// A device of a chatting user (for a test's own requests).
    pub fn device(&self) -> &Device {
        &self.cast.senders[0].0
    }

    /// Messages acked so far.
    pub fn acked(&self) -> usize {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `count` more messages have been acked (traffic flows).
    pub async fn wait_for_acks(&self, count: usize) {
        let target = self.acked() + count;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while self.acked() < target {
            assert!(Instant::now() < deadline, "traffic did not reach {target} acks (at {})", self.acked());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops sending (each sender first gets its last message acked), lets
    /// deliveries settle and checks everything against `system`; panics
    /// saying what went wrong, else returns what the clients went through.
    pub async fn finish(mut self, system: &Checked<'_>) -> Report {
        self.stop.cancel();
        let mut senders = Vec::new();
        for task in std::mem::take(&mut self.senders) {
            senders.push(task.await.expect("sender task"));
        }
        let sending = self.started.elapsed();
        let acked: Vec<&(String, u64, String, String)> = senders.iter().flat_map(|s| &s.acked).collect();
        // Every queue drained first: history has then stored all it will.
        let mut problems = check_queues(system.nats_url).await;

        let mut stored = HashMap::new();
        for (conversation, reader) in &self.cast.readers {
            let messages = all_messages(system.api, reader, conversation).await;
            let expected: Vec<_> = acked.iter().copied().filter(|a| &a.0 == conversation).collect();
            problems.extend(check_history(conversation, &messages, &expected));
            stored.insert(conversation.clone(), sent_by_clients(&messages));
        }

        let receivers = self.settle_receivers(&stored).await;
        for (log, (_, conversations)) in receivers.iter().zip(&self.cast.receivers) {
            for conversation in conversations {
                let got = log.received.get(conversation).map(Vec::as_slice).unwrap_or_default();
                let want = stored.get(conversation).map(Vec::as_slice).unwrap_or_default();
                if got != want {
                    problems.push(format!(
                        "device {} in {conversation}: got {} frames, history has {}; first difference: {}",
                        log.device,
                        got.len(),
                        want.len(),
                        first_difference(got, want)
                    ));
                }
            }
        }

        let for_offline: usize =
            self.cast.offline_conversations.iter().map(|c| stored.get(c).map_or(0, Vec::len)).sum();
        problems.extend(check_pushes(&self.push, for_offline).await);
        let dead = dead_letters(system.history_database).await;
        if !dead.is_empty() {
            problems.push(format!("history set aside {} entries: {dead:?}", dead.len()));
        }

        let report = Report {
            acked: acked.len(),
            sending,
            recovery: senders.iter().map(|s| s.longest_outage).max().unwrap_or_default(),
            longest_wait: senders.iter().map(|s| s.longest_wait).max().unwrap_or_default(),
            retries: senders.iter().map(|s| s.retries).sum(),
            delivery_resumed: self.healed.map(|at| {
                let first_after = |log: &ReceiverLog| log.arrivals.iter().find(|t| **t >= at).map(|t| *t - at);
                receivers.iter().map(|r| first_after(r).unwrap_or(SETTLE_TIMEOUT)).max().unwrap_or_default()
            }),
            reconnects: receivers.iter().map(|r| r.reconnects).sum(),
            send_errors: merge(senders.iter().map(|s| &s.errors)),
            receive_errors: merge(receivers.iter().map(|r| &r.errors)),
        };
        println!("{report}");
        assert!(problems.is_empty(), "{} problems:\n{}\n{report}", problems.len(), problems.join("\n"));
        report
    }

    /// Waits until every receiver has as many messages as history holds for
    /// its conversations (or the settle timeout), then a little longer so a
    /// late duplicate shows too; stops the receivers and returns their logs.
    async fn settle_receivers(&self, stored: &HashMap<String, Vec<(u64, String)>>) -> Vec<ReceiverLog> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        for ((_, log), (_, conversations)) in self.receivers.iter().zip(&self.cast.receivers) {
            let complete = |log: &ReceiverLog| {
                conversations
                    .iter()
                    .all(|c| log.received.get(c).map_or(0, Vec::len) >= stored.get(c).map_or(0, Vec::len))
            };
            while !complete(&lock(log)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.receivers
            .iter()
            .map(|(task, log)| {
                task.abort();
                lock(log).clone()
            })
            .collect()
    }
}

/// Where the checker looks: the HTTP API (for history), NATS (for queues),
/// history's database (for dead letters).
pub struct Checked<'a> {
    pub api: &'a Api,
    pub nats_url: &'a str,
    pub history_database: &'a str,
}

/// What the clients went through during a fault test.
#[derive(Debug, Clone)]
pub struct Report {
    pub acked: usize,
    pub sending: Duration,
    /// The longest time from a sender's first failed attempt to its next success.
    pub recovery: Duration,
    /// The longest a single attempt waited for its answer.
    pub longest_wait: Duration,
    pub retries: usize,
    /// From the end of the fault to the moment every receiver had a message again.
    pub delivery_resumed: Option<Duration>,
    pub reconnects: usize,
    pub send_errors: BTreeMap<String, usize>,
    pub receive_errors: BTreeMap<String, usize>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fault report: {} acked in {:.1} s; recovery {} ms; delivery resumed {} after healing; \
             longest wait for an answer {} ms; {} send retries; {} receiver reconnects; send errors {:?}; \
             receiver errors {:?}",
            self.acked,
            self.sending.as_secs_f64(),
            self.recovery.as_millis(),
            self.delivery_resumed.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis())),
            self.longest_wait.as_millis(),
            self.retries,
            self.reconnects,
            self.send_errors,
            self.receive_errors
        )
    }
}

fn merge<'a>(maps: impl Iterator<Item = &'a BTreeMap<String, usize>>) -> BTreeMap<String, usize> {
    let mut all = BTreeMap::new();
    for map in maps {
        for (key, n) in map {
            *all.entry(key.clone()).or_default() += n;
        }
    }
    all
}

/// History's messages of one conversation against what was acked in it.
fn check_history(conversation: &str, messages: &[Stored], acked: &[&(String, u64, String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
        problems.push(format!("history of {conversation}: seqs are not 1..n: {}", gaps(&seqs)));
    }
    if messages.iter().map(|m| &m.message_id).collect::<HashSet<_>>().len() != messages.len() {
        problems.push(format!("history of {conversation}: a message id appears twice"));
    }
    let by_seq: HashMap<u64, &String> = messages.iter().map(|m| (m.seq, &m.message_id)).collect();
    for (_, seq, message_id, client_msg_id) in acked {
        if by_seq.get(seq) != Some(&message_id) {
            problems.push(format!("acked {client_msg_id} (seq {seq}, {message_id}) is not in history as acked"));
        }
    }
    let sent = messages.iter().filter(|m| !m.system).count();
    if sent != acked.len() {
        problems.push(format!(
            "history of {conversation} holds {sent} messages from clients where {} were acked",
            acked.len()
        ));
    }
    problems
}

fn gaps(seqs: &[u64]) -> String {
    let shown: Vec<String> =
        seqs.windows(2).filter(|w| w[1] != w[0] + 1).take(5).map(|w| format!("{} then {}", w[0], w[1])).collect();
    format!("first {:?}, {}", seqs.first(), shown.join(", "))
}

fn first_difference(got: &[(u64, String)], want: &[(u64, String)]) -> String {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(i) => format!("at {i}: got seq {} where history has seq {}", got[i].0, want[i].0),
        None if got.len() > want.len() => format!("extra frames from seq {}", got[want.len()].0),
        None => format!("missing from seq {}", want.get(got.len()).map_or(0, |w| w.0)),
    }
}

/// One message in history.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    seq: u64,
    message_id: String,
    /// A system message (the group's creation), which no client sent.
    system: bool,
}

/// Every message of a conversation, oldest first.
async fn all_messages(api: &Api, reader: &Device, conversation: &str) -> Vec<Stored> {
    let mut messages: Vec<Stored> = Vec::new();
    loop {
        let after = messages.last().map_or(0, |m| m.seq);
        let (status, body) = api.messages(reader, conversation, &format!("?after_seq={after}&limit=200")).await;
        assert_eq!(status, 200, "history of {conversation}: {body}");
        let page = body["messages"].as_array().cloned().unwrap_or_default();
        messages.extend(page.iter().map(|m| Stored {
            seq: m["seq"].as_u64().unwrap_or(0),
            message_id: m["message_id"].as_str().unwrap_or_default().to_owned(),
            system: !m["system"].is_null(),
        }));
        if page.is_empty() || body["has_more"] != true {
            return messages;
        }
    }
}

/// What clients sent, as (seq, message id): what every receiver must get.
fn sent_by_clients(messages: &[Stored]) -> Vec<(u64, String)> {
    messages.iter().filter(|m| !m.system).map(|m| (m.seq, m.message_id.clone())).collect()
}

/// The offline user's webhook: the notifications (distinct ids) cover
/// `expected` messages in all, none twice; a repeated id carries the same body.
async fn check_pushes(push: &PushEndpoint, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
        for received in push.received(PUSH_PATH) {
            let id = received.headers.get("Idempotency-Key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            by_id.entry(id).or_default().push(serde_json::from_slice(&received.body).unwrap_or(Value::Null));
        }
        let covered: usize = by_id.values().map(|bodies| bodies[0]["count"].as_u64().unwrap_or(0) as usize).sum();
        let mut problems = Vec::new();
        if covered > expected {
            problems.push(format!("pushes cover {covered} messages, {expected} were sent: some twice"));
        }
        for (id, bodies) in &by_id {
            if bodies.iter().any(|b| b != &bodies[0]) {
                problems.push(format!("notification {id} was sent again with another body"));
            }
        }
        if !problems.is_empty() || covered == expected {
            return problems;
        }
        if Instant::now() > deadline {
            return vec![format!("pushes cover {covered} of {expected} messages")];
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every durable consumer of every stream ends with nothing pending and
/// nothing waiting for an ack.
async fn check_queues(nats_url: &str) -> Vec<String> {
    let client = chat_common::nats::connect(nats_url, "fault checker").await.expect("nats for the checker");
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut stuck = Vec::new();
        let names: Vec<String> = js.stream_names().filter_map(|n| async { n.ok() }).collect().await;
        for name in names {
            let Ok(stream) = js.get_stream(&name).await else { continue };
            let consumers: Vec<_> = stream.consumers().filter_map(|c| async { c.ok() }).collect().await;
            for info in consumers.iter().filter(|c| c.config.durable_name.is_some()) {
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    stuck.push(format!(
                        "{name}/{}: {} pending, {} unacked",
                        info.name, info.num_pending, info.num_ack_pending
                    ));
                }
            }
        }
        if stuck.is_empty() || Instant::now() > deadline {
            return stuck;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// History's dead letters (stream positions).
async fn dead_letters(database: &str) -> Vec<i64> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database).await.expect("history database");
    let rows: Vec<i64> =
        sqlx::query_scalar("SELECT stream_seq FROM dead_letters").fetch_all(&pool).await.expect("dead letters");
    pool.close().await;
    rows
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a socket with header auth (and a cursor to resume from) and reads
/// its `ready`; `Err` says why not.
async fn connect(gateway: &str, device: &Device, cursor: Option<&str>) -> Result<(Socket, Value), String> {
    let query = cursor.map(|c| format!("?cursor={c}")).unwrap_or_default();
    let mut request = format!("ws://{gateway}/v1/ws{query}").into_client_request().map_err(|e| e.to_string())?;
    let bearer = format!("Bearer {}", device.access_token).parse().map_err(|_| "header".to_owned())?;
    request.headers_mut().insert("Authorization", bearer);
    let connecting = tokio_tungstenite::connect_async(request);
    let (mut socket, _) = tokio::time::timeout(ANSWER_TIMEOUT, connecting)
        .await
        .map_err(|_| "connect timed out")?
        .map_err(|e| e.to_string())?;
    let ready = next_frame(&mut socket, ANSWER_TIMEOUT).await?;
    if ready["type"] != "ready" {
        return Err(format!("expected ready, got {ready}"));
    }
    Ok((socket, ready))
}

/// The next text frame as JSON; `Err` on close, error or timeout.
async fn next_frame(socket: &mut Socket, timeout: Duration) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(timeout, socket.next()).await {
            Err(_) => return Err("timed out".into()),
            Ok(Some(Ok(WsMessage::Text(text)))) => return serde_json::from_str(&text).map_err(|e| e.to_string()),
            Ok(Some(Ok(WsMessage::Close(frame)))) => {
                return Err(format!("closed {}", frame.map_or(0, |f| u16::from(f.code))));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Err("ended".into()),
        }
    }
}

/// One receiving device: connects, records every message frame, and on any
/// failure reconnects (to the next gateway) with the cursor of the last frame
/// it processed, until the checker stops it. Signals `ready` once it is first live.
async fn receive(
    gateways: Gateways,
    first: usize,
    device: Device,
    log: Arc<Mutex<ReceiverLog>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut cursor: Option<String> = None;
    let mut turn = first;
    loop {
        let gateway = gateways.pick(turn);
        let mut socket = match connect(&gateway, &device, cursor.as_deref()).await {
            Ok((socket, hello)) => {
                if cursor.is_none() {
                    cursor = hello["cursor"].as_str().map(str::to_owned);
                }
                socket
            }
            Err(e) => {
                note_failure(&mut lock(&log), &format!("connect: {e}"));
                turn += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        // Read until the socket fails; the test's end aborts this task.
        let failure = loop {
            let frame = match next_frame(&mut socket, Duration::from_secs(3600)).await {
                Ok(frame) => frame,
                Err(e) => break e,
            };
            record(&mut lock(&log), &frame);
            if let Some(next) = frame["cursor"].as_str() {
                cursor = Some(next.to_owned());
            }
        };
        note_failure(&mut lock(&log), &failure);
        turn += 1;
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Records a frame a receiver processed.
fn record(log: &mut ReceiverLog, frame: &Value) {
    match frame["type"].as_str() {
        Some("message") => {
            let message = &frame["message"];
            let conversation = message["conversation_id"].as_str().unwrap_or_default().to_owned();
            let entry =
                (message["seq"].as_u64().unwrap_or(0), message["message_id"].as_str().unwrap_or_default().to_owned());
            log.received.entry(conversation).or_default().push(entry);
            log.arrivals.push(Instant::now());
        }
        Some("error") => *log.errors.entry(frame["code"].as_str().unwrap_or("?").to_owned()).or_default() += 1,
        _ => {}
    }
}

fn note_failure(log: &mut ReceiverLog, failure: &str) {
    log.reconnects += 1;
    *log.errors.entry(failure_kind(failure)).or_default() += 1;
}

/// One sender: a message every `interval` to its conversations in turn, each
/// retried with the same `client_msg_id` until acked. Stops after the message
/// it is on when `stop` is cancelled.
async fn send(
    gateways: Gateways,
    first: usize,
    device: Device,
    conversations: Vec<String>,
    interval: Duration,
    acked: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
) -> SenderLog {
    let mut log = SenderLog::default();
    let mut socket: Option<Socket> = None;
    let mut turn = first;
    let mut req = 0_i64;
    for n in 0_usize.. {
        if stop.is_cancelled() {
            break;
        }
        let conversation = &conversations[n % conversations.len()];
        let client_msg_id = format!("{}-{n}", device.username);
        let mut failing_since: Option<Instant> = None;
        loop {
            let attempt = Instant::now();
            let outcome = match socket.as_mut() {
                Some(open) => {
                    req += 1;
                    let frame = json!({
                        "type": "send", "req": req, "conversation_id": conversation,
                        "client_msg_id": client_msg_id, "body": format!("message {n}"),
                    });
                    match open.send(WsMessage::Text(frame.to_string().into())).await {
                        Ok(()) => answer(open, req).await,
                        Err(e) => Err(e.to_string()),
                    }
                }
                None => match connect(&gateways.pick(turn), &device, None).await {
                    Ok((open, _)) => {
                        socket = Some(open);
                        continue;
                    }
                    Err(e) => Err(format!("connect: {e}")),
                },
            };
            log.longest_wait = log.longest_wait.max(attempt.elapsed());
            match outcome {
                Ok(Ok(message)) => {
                    log.acked.push((
                        message["conversation_id"].as_str().unwrap_or_default().to_owned(),
                        message["seq"].as_u64().unwrap_or(0),
                        message["message_id"].as_str().unwrap_or_default().to_owned(),
                        client_msg_id.clone(),
                    ));
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(since) = failing_since {
                        log.longest_outage = log.longest_outage.max(since.elapsed());
                    }
                    break;
                }
                Ok(Err(code)) => {
                    *log.errors.entry(code).or_default() += 1;
                }
                Err(failure) => {
                    *log.errors.entry(failure_kind(&failure)).or_default() += 1;
                    socket = None;
                    turn += 1;
                }
            }
            failing_since.get_or_insert(attempt);
            log.retries += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        tokio::time::sleep(interval).await;
    }
    log
}

/// The answer to `req`: `Ok(Ok(message))` for an ack, `Ok(Err("code: message"))` for an
/// error frame, `Err` when the socket failed or nothing came in time.
async fn answer(socket: &mut Socket, req: i64) -> Result<Result<Value, String>, String> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let frame = next_frame(socket, deadline.saturating_duration_since(Instant::now())).await?;
        if frame["req"] != req {
            continue;
        }
        match frame["type"].as_str() {
            Some("ack") => return Ok(Ok(frame["message"].clone())),
            Some("error") => {
                let (code, message) = (frame["code"].as_str().unwrap_or("?"), frame["message"].as_str().unwrap_or(""));
                return Ok(Err(format!("{code}: {message}")));
            }
            _ => continue,
        }
    }
}

/// A failure's kind for the report: "timed out", "closed 1001", "connect: …".
fn failure_kind(failure: &str) -> String {
    if failure.starts_with("connect") {
        "connect failed".into()
    } else if failure.starts_with("closed") || failure == "timed out" {
        failure.to_owned()
    } else {
        "socket failed".into()
    }
}
