//! Ed25519 signing keys and access tokens. Keys are persisted, so a restart
//! does not log anyone out. The newest non-retired key signs; every
//! non-retired key verifies (the JWKS lists them), so a rotation logs nobody
//! out and a retirement invalidates exactly the tokens of the retired key.

use std::sync::RwLock;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::config::Config;
use crate::error::Error;
use crate::store::{SigningKeyRow, Store};

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The claims of an access token (see docs/protocol.md).
#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    did: &'a str,
    iss: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
}

struct Active {
    kid: String,
    key: EncodingKey,
    jwks_json: String,
}

pub struct Keyring {
    active: RwLock<Active>,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

impl Keyring {
    /// Loads the keys, creating the first one on a fresh database.
    pub async fn load(store: &Store, config: &Config) -> Result<Self, Error> {
        if store.active_signing_keys().await?.is_empty() {
            let row = generate_key()?;
            store.insert_signing_key(&row).await?;
            tracing::info!(kid = %row.kid, "created the first signing key");
        }
        Ok(Self {
            active: RwLock::new(active(store).await?),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_secs: config.access_token_ttl_secs,
        })
    }

    /// Re-reads the keys from the database (after a rotation anywhere).
    pub async fn reload(&self, store: &Store) -> Result<(), Error> {
        let fresh = active(store).await?;
        *self.active.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    pub fn jwks_json(&self) -> String {
        self.read().jwks_json.clone()
    }

    pub fn signing_kid(&self) -> String {
        self.read().kid.clone()
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Active> {
        self.active.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A signed access token for one device of one user.
    pub fn access_token(&self, user_id: &str, device_id: &str) -> Result<String, Error> {
        let now = chat_common::time::now_ms() / 1000;
        let claims = Claims {
            sub: user_id,
            did: device_id,
            iss: &self.issuer,
            aud: &self.audience,
            exp: now + self.ttl_secs,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let active = self.read();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(active.kid.clone());
        jsonwebtoken::encode(&header, &claims, &active.key)
            .map_err(|e| Error::Unexpected(anyhow::anyhow!("signing failed: {e}")))
    }
}

/// The newest non-retired key, and the JWKS of all non-retired keys.
async fn active(store: &Store) -> Result<Active, Error> {
    let keys = store.active_signing_keys().await?;
    let newest =
        keys.first().ok_or_else(|| Error::Unexpected(anyhow::anyhow!("no signing key: every key is retired")))?;
    let der = STANDARD.decode(&newest.private_key_pkcs8).context("stored key unreadable")?;
    Ok(Active { kid: newest.kid.clone(), key: EncodingKey::from_ed_der(&der), jwks_json: jwks_json(&keys) })
}

/// A new random Ed25519 key.
pub fn generate_key() -> Result<SigningKeyRow, Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("no randomness")?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&seed);
    Ok(SigningKeyRow {
        kid: uuid::Uuid::now_v7().simple().to_string(),
        private_key_pkcs8: STANDARD.encode(pkcs8),
        public_key_x: URL_SAFE_NO_PAD.encode(public),
        created_at_ms: chat_common::time::now_ms(),
        retired_at_ms: None,
    })
}

fn jwks_json(keys: &[SigningKeyRow]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": k.kid,
                "x": k.public_key_x,
            })
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}
