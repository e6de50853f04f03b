//! A push endpoint for the tests, standing in for a browser's push service
//! and for a webhook receiver. It records every request, answers with the
//! status a test sets per path (optionally after a delay), and can check what
//! it got the way a real receiver would: the webhook's HMAC signature, the
//! Web Push VAPID token (RFC 8292), and the payload decrypted with the
//! subscription's private key (RFC 8291). Written independently of the
//! service's code, from the RFCs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Verifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use serde_json::Value;
use sha2::Sha256;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Shared {
    received: HashMap<String, Vec<Received>>,
    status: HashMap<String, u16>,
    delay: HashMap<String, Duration>,
}

#[derive(Clone)]
pub struct PushEndpoint {
    pub base: String,
    shared: Arc<Mutex<Shared>>,
}

async fn receive(
    State(shared): State<Arc<Mutex<Shared>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (status, delay) = {
        let mut shared = shared.lock().unwrap();
        let received = Received { headers, body: body.to_vec(), at: std::time::Instant::now() };
        shared.received.entry(path.clone()).or_default().push(received);
        (shared.status.get(&path).copied().unwrap_or(201), shared.delay.get(&path).copied())
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    StatusCode::from_u16(status).unwrap()
}

impl PushEndpoint {
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = axum::Router::new().route("/{path}", axum::routing::post(receive)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Answers requests to `path` with `status` from now on.
    pub fn answer(&self, path: &str, status: u16) {
        self.shared.lock().unwrap().status.insert(path.to_owned(), status);
    }

    /// Holds each answer to `path` for `delay`.
    pub fn delay(&self, path: &str, delay: Duration) {
        self.shared.lock().unwrap().delay.insert(path.to_owned(), delay);
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.shared.lock().unwrap().received.get(path).cloned().unwrap_or_default()
    }

    /// Waits until `path` has received `count` requests (10 s at most).
    pub async fn wait_for(&self, path: &str, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let received = self.received(path);
            if received.len() >= count {
                return received;
            }
            assert!(tokio::time::Instant::now() < deadline, "{path}: {} of {count} requests", received.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks a webhook request's signature with `secret` and returns its JSON.
pub fn verify_webhook(received: &Received, secret: &str) -> Value {
    let header = |name: &str| received.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let timestamp = header("x-chat-timestamp");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - timestamp.parse::<i64>().expect("a timestamp")).abs() < 300, "a fresh timestamp");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(header("x-chat-signature"), expected, "the HMAC signature verifies");
    serde_json::from_slice(&received.body).expect("a JSON payload")
}

/// A browser's side of a Web Push subscription: its key pair and auth secret.
pub struct BrowserSubscription {
    secret: SecretKey,
    pub auth: [u8; 16],
}

impl Default for BrowserSubscription {
    fn default() -> Self {
        Self::new()
    }
}

impl BrowserSubscription {
    pub fn new() -> Self {
        let mut bytes = [0u8; 32];
        getrandom_fill(&mut bytes);
        let mut auth = [0u8; 16];
        getrandom_fill(&mut auth);
        Self { secret: SecretKey::from_slice(&bytes).expect("a valid scalar"), auth }
    }

    fn public_bytes(&self) -> Vec<u8> {
        self.secret.public_key().to_encoded_point(false).as_bytes().to_vec()
    }

    /// `keys` of the browser's `PushSubscription.toJSON()`.
    pub fn keys(&self) -> Value {
        serde_json::json!({ "p256dh": B64.encode(self.public_bytes()), "auth": B64.encode(self.auth) })
    }

    /// Checks the VAPID token against `endpoint` and `vapid_public_key`, then
    /// decrypts the payload (RFC 8291 / RFC 8188) and returns its JSON.
    pub fn open(&self, received: &Received, endpoint: &str, vapid_public_key: &str) -> Value {
        let header =
            |name: &str| received.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(header("content-encoding"), "aes128gcm");
        assert!(header("ttl").parse::<u32>().is_ok(), "a TTL header");
        verify_vapid(&header("authorization"), endpoint, vapid_public_key);

        let body = &received.body;
        let (salt, rest) = body.split_at(16);
        let key_len = rest[4] as usize;
        let (sender_public, ciphertext) = rest[5..].split_at(key_len);
        let shared = p256::ecdh::diffie_hellman(
            self.secret.to_nonzero_scalar(),
            PublicKey::from_sec1_bytes(sender_public).expect("the sender's key").as_affine(),
        );
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(&self.public_bytes());
        info.extend_from_slice(sender_public);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes()).expand(&info, &mut ikm).unwrap();
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut key, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut key).unwrap();
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce).unwrap();
        let mut plain =
            Aes128Gcm::new_from_slice(&key).unwrap().decrypt(&Nonce::from(nonce), ciphertext).expect("it decrypts");
        assert_eq!(plain.pop(), Some(2), "a single, last record");
        serde_json::from_slice(&plain).expect("a JSON payload")
    }
}

fn verify_vapid(authorization: &str, endpoint: &str, vapid_public_key: &str) {
    let rest = authorization.strip_prefix("vapid ").expect("vapid scheme");
    let mut token = "";
    let mut key = "";
    for part in rest.split(',').map(str::trim) {
        if let Some(t) = part.strip_prefix("t=") {
            token = t;
        } else if let Some(k) = part.strip_prefix("k=") {
            key = k;
        }
    }
    assert_eq!(key, vapid_public_key, "k= is the service's VAPID key");
    let (signing_input, signature) = token.rsplit_once('.').expect("a JWT");
    let (header, claims) = signing_input.split_once('.').expect("a JWT");
    let header: Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let public = PublicKey::from_sec1_bytes(&B64.decode(key).unwrap()).expect("a P-256 key");
    let signature = p256::ecdsa::Signature::from_slice(&B64.decode(signature).unwrap()).expect("r||s");
    p256::ecdsa::VerifyingKey::from(public)
        .verify(signing_input.as_bytes(), &signature)
        .expect("the signature verifies");
    let claims: Value = serde_json::from_slice(&B64.decode(claims).unwrap()).unwrap();
    let origin = reqwest::Url::parse(endpoint).unwrap().origin().ascii_serialization();
    assert_eq!(claims["aud"], origin);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(exp > now && exp <= now + 24 * 3600, "exp within 24 h");
    assert!(claims["sub"].as_str().is_some_and(|s| s.starts_with("mailto:") || s.starts_with("https:")));
}

fn getrandom_fill(bytes: &mut [u8]) {
    getrandom::fill(bytes).expect("randomness");
}
