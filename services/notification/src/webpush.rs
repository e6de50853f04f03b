//! Web Push, implemented from the RFCs: the message is encrypted for the
//! browser's subscription keys (RFC 8291, `aes128gcm` content coding of RFC
//! 8188) and the request carries a VAPID token (RFC 8292) signed with this
//! service's P-256 key, so the push service knows who sends it.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use async_nats::jetstream::kv;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hkdf::Hkdf;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

use crate::random;

/// Record size advertised in the header; one record carries the whole message.
const RECORD_SIZE: u32 = 4096;
/// The largest plaintext that fits one record (16 bytes of tag, 1 delimiter).
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - 16 - 1;
/// VAPID tokens are valid this long (RFC 8292 allows up to 24 hours).
const VAPID_LIFETIME_SECS: i64 = 12 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum WebPushError {
    #[error("invalid subscription key: {0}")]
    InvalidKey(&'static str),
    #[error("payload too large for one record")]
    TooLarge,
    #[error("key storage: {0}")]
    Storage(String),
}

fn new_secret_key() -> SecretKey {
    loop {
        // Almost every 32-byte string is a valid scalar; retry the rest.
        if let Ok(key) = SecretKey::from_slice(&random::<32>()) {
            return key;
        }
    }
}

/// This service's VAPID key pair.
pub struct Vapid {
    key: SigningKey,
    /// Uncompressed public point, base64url: `k=` in the header and the
    /// browser's `applicationServerKey`.
    pub public_key: String,
    subject: String,
}

impl Vapid {
    /// Loads the key from the keys bucket, or creates it there. Created with
    /// compare-and-set, so instances starting together agree on one key.
    ///
    /// # Errors
    /// When the bucket cannot be read or written, or holds an unusable key.
    pub async fn load_or_create(keys: &kv::Store, subject: &str) -> Result<Self, WebPushError> {
        let storage = |e: &dyn std::fmt::Display| WebPushError::Storage(e.to_string());
        let der = match keys.get("vapid").await.map_err(|e| storage(&e))? {
            Some(der) => der,
            None => {
                let der = new_secret_key().to_pkcs8_der().map_err(|e| storage(&e))?.as_bytes().to_vec();
                match keys.create("vapid", der.clone().into()).await {
                    Ok(_) => der.into(),
                    // Another instance created it first: use theirs.
                    Err(_) => keys
                        .get("vapid")
                        .await
                        .map_err(|e| storage(&e))?
                        .ok_or_else(|| storage(&"vapid key vanished"))?,
                }
            }
        };
        let secret = SecretKey::from_pkcs8_der(&der).map_err(|e| storage(&e))?;
        let public = secret.public_key().to_encoded_point(false);
        Ok(Self {
            key: SigningKey::from(secret),
            public_key: B64.encode(public.as_bytes()),
            subject: subject.to_owned(),
        })
    }

    /// The `Authorization` header value for a push to `endpoint`.
    pub fn authorization(&self, endpoint: &reqwest::Url, now_secs: i64) -> String {
        let audience = endpoint.origin().ascii_serialization();
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": audience, "exp": now_secs + VAPID_LIFETIME_SECS, "sub": self.subject });
        let signing_input = format!("{header}.{}", B64.encode(claims.to_string()));
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        format!("vapid t={signing_input}.{}, k={}", B64.encode(signature.to_bytes()), self.public_key)
    }
}

/// Encrypts `plaintext` for a subscription (RFC 8291): returns the request
/// body (the `aes128gcm` header followed by the single record).
///
/// # Errors
/// When the subscription's keys are malformed or the payload is too large.
pub fn encrypt(p256dh: &str, auth: &str, plaintext: &[u8]) -> Result<Vec<u8>, WebPushError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(WebPushError::TooLarge);
    }
    let ua_public_bytes = B64.decode(p256dh).map_err(|_| WebPushError::InvalidKey("p256dh is not base64url"))?;
    let ua_public = PublicKey::from_sec1_bytes(&ua_public_bytes)
        .map_err(|_| WebPushError::InvalidKey("p256dh is not a P-256 point"))?;
    let auth_secret = B64.decode(auth).map_err(|_| WebPushError::InvalidKey("auth is not base64url"))?;
    if auth_secret.len() != 16 {
        return Err(WebPushError::InvalidKey("auth must be 16 bytes"));
    }
    let ua_public_bytes = ua_public.to_encoded_point(false).as_bytes().to_vec();

    // A fresh key pair per message; its public half travels in the header.
    let as_secret = p256::ecdh::EphemeralSecret::random(&mut RandomSource);
    let as_public_bytes = as_secret.public_key().to_encoded_point(false).as_bytes().to_vec();
    let shared = as_secret.diffie_hellman(&ua_public);

    // RFC 8291 §3.3–3.4: combine the shared secret with the auth secret…
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(&ua_public_bytes);
    key_info.extend_from_slice(&as_public_bytes);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&auth_secret), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(|_| WebPushError::InvalidKey("key derivation"))?;
    // …then derive the content key and nonce with a random salt (RFC 8188 §2.2).
    let salt = random::<16>();
    let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).map_err(|_| WebPushError::InvalidKey("key derivation"))?;
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce).map_err(|_| WebPushError::InvalidKey("key derivation"))?;

    let mut record = plaintext.to_vec();
    record.push(2); // delimiter of the last (and only) record, no padding
    let ciphertext = Aes128Gcm::new_from_slice(&cek)
        .map_err(|_| WebPushError::InvalidKey("content key"))?
        .encrypt(&Nonce::from(nonce), record.as_slice())
        .map_err(|_| WebPushError::InvalidKey("encryption"))?;

    let mut body = Vec::with_capacity(16 + 4 + 1 + as_public_bytes.len() + ciphertext.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public_bytes.len() as u8);
    body.extend_from_slice(&as_public_bytes);
    body.extend_from_slice(&ciphertext);
    Ok(body)
}

/// The operating system's randomness, as the elliptic-curve crates want it.
struct RandomSource;

impl p256::elliptic_curve::rand_core::RngCore for RandomSource {
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes(random::<4>())
    }

    fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes(random::<8>())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        getrandom::fill(dest).expect("the operating system has randomness");
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), p256::elliptic_curve::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl p256::elliptic_curve::rand_core::CryptoRng for RandomSource {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decrypting our output as a browser would (RFC 8291 §3.4, RFC 8188 §2)
    /// gives the plaintext back.
    #[test]
    fn the_receiver_decrypts_what_we_encrypt() {
        let ua_secret = new_secret_key();
        let ua_public = ua_secret.public_key().to_encoded_point(false).as_bytes().to_vec();
        let auth = random::<16>();
        let body =
            encrypt(&B64.encode(&ua_public), &B64.encode(auth), b"When I grow up, I want to be a watermelon").unwrap();

        let (salt, rest) = body.split_at(16);
        assert_eq!(u32::from_be_bytes(rest[..4].try_into().unwrap()), RECORD_SIZE);
        let key_len = rest[4] as usize;
        let (as_public, ciphertext) = rest[5..].split_at(key_len);
        let shared = p256::ecdh::diffie_hellman(
            ua_secret.to_nonzero_scalar(),
            PublicKey::from_sec1_bytes(as_public).unwrap().as_affine(),
        );
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(&ua_public);
        key_info.extend_from_slice(as_public);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&auth), shared.raw_secret_bytes()).expand(&key_info, &mut ikm).unwrap();
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).unwrap();
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce).unwrap();
        let plain = Aes128Gcm::new_from_slice(&cek).unwrap().decrypt(&Nonce::from(nonce), ciphertext).unwrap();
        assert_eq!(plain.last(), Some(&2));
        assert_eq!(&plain[..plain.len() - 1], b"When I grow up, I want to be a watermelon");
    }

    #[test]
    fn malformed_subscription_keys_are_refused() {
        assert!(matches!(encrypt("AAAA", &B64.encode([0u8; 16]), b"x"), Err(WebPushError::InvalidKey(_))));
        let ua = new_secret_key().public_key().to_encoded_point(false).as_bytes().to_vec();
        assert!(matches!(encrypt(&B64.encode(ua), &B64.encode([0u8; 8]), b"x"), Err(WebPushError::InvalidKey(_))));
    }
}
