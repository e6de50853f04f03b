//! Who a request or a socket speaks for: the credentials in an
//! `Authorization` header, and access-token verification, locally, with the
//! public keys auth publishes (JWKS). The algorithm is pinned to EdDSA; `iss`,
//! `aud`, `exp` and `nbf` are checked. An unknown `kid` refetches the key set,
//! at most once per interval.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chat_common::grpc::Channel;
use chat_proto::auth::v1::GetJwksRequest;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::ApiError;
use crate::revocation::Revocations;

const REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// Who a valid access token speaks for. Shared (`Arc<str>`) with what a
/// socket registers in delivery and presence, so an open socket holds each
/// once.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Arc<str>,
    pub device_id: Arc<str>,
    /// The key that signed the token: a socket it opened lives as long as that key.
    pub kid: Arc<str>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    did: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid access token")]
    Invalid,
    #[error("cannot fetch signing keys: {0}")]
    KeysUnavailable(String),
}

pub struct Verifier {
    auth: AuthServiceClient<Channel>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// When the key set was last fetched. Held across a fetch, so requests
    /// arriving meanwhile wait for its result instead of failing.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    validation: Validation,
    revocations: Arc<Revocations>,
}

impl Verifier {
    pub fn new(auth: AuthServiceClient<Channel>, issuer: &str, audience: &str, revocations: Arc<Revocations>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "sub", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            auth,
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            validation,
            revocations,
        }
    }

    /// # Errors
    /// `Invalid` for any token that does not verify; `KeysUnavailable` when the
    /// keys cannot be fetched at all.
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        if token.is_empty() || token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        if !self.has_key(&kid) {
            self.refetch_keys(&kid).await?;
        }
        let keys = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = keys.get(&kid).ok_or(TokenError::Invalid)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|_| TokenError::Invalid)?;
        let valid_id = |s: &str| uuid::Uuid::parse_str(s).is_ok();
        if !valid_id(&data.claims.sub) || !valid_id(&data.claims.did) {
            return Err(TokenError::Invalid);
        }
        if self.revocations.is_revoked(&data.claims.did) {
            return Err(TokenError::Invalid);
        }
        Ok(Identity { user_id: data.claims.sub.into(), device_id: data.claims.did.into(), kid: kid.into() })
    }

    /// The ids of the keys tokens may be signed with now.
    pub fn kids(&self) -> std::collections::HashSet<String> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }

    fn has_key(&self, kid: &str) -> bool {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(kid)
    }

    /// Fetches the key set now, whenever it was last fetched: auth announced
    /// a rotation or retirement.
    pub async fn refresh_keys(&self) -> Result<(), TokenError> {
        let mut last = self.last_fetch.lock().await;
        *last = None;
        self.fetch_keys(&mut last).await
    }

    /// Fetches the key set for an unknown `kid`, at most once per interval.
    async fn refetch_keys(&self, kid: &str) -> Result<(), TokenError> {
        let mut last = self.last_fetch.lock().await;
        if self.has_key(kid) {
            return Ok(()); // fetched while this request waited
        }
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return Ok(());
        }
        self.fetch_keys(&mut last).await
    }

    async fn fetch_keys(&self, last: &mut Option<Instant>) -> Result<(), TokenError> {
        *last = Some(Instant::now());
        let reply = self.auth.clone().get_jwks(GetJwksRequest {}).await;
        let json = match reply {
            Ok(r) => r.into_inner().jwks_json,
            Err(status) => {
                // Let the next request try again rather than wait out the interval.
                *last = None;
                return Err(TokenError::KeysUnavailable(status.message().to_owned()));
            }
        };
        let set: JwkSet = serde_json::from_str(&json).map_err(|e| TokenError::KeysUnavailable(e.to_string()))?;
        let mut fresh = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) {
                fresh.insert(kid, key);
            }
        }
        tracing::info!(keys = fresh.len(), "refreshed token signing keys");
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// What a request's `Authorization` header says.
pub enum Credentials<'a> {
    None,
    Bearer(&'a str),
    /// There is a header, but not a usable bearer token.
    Malformed,
}

pub fn credentials(headers: &axum::http::HeaderMap) -> Credentials<'_> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else { return Credentials::None };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    token.map_or(Credentials::Malformed, Credentials::Bearer)
}

/// # Errors
/// `unauthorized` for a token that does not verify, `unavailable` when the
/// signing keys cannot be fetched.
pub async fn verify(verifier: &Verifier, token: &str) -> Result<Identity, ApiError> {
    verifier.verify(token).await.map_err(|e| match e {
        TokenError::Invalid => ApiError::unauthorized("invalid or expired access token"),
        TokenError::KeysUnavailable(reason) => {
            tracing::warn!(%reason, "cannot fetch token signing keys");
            ApiError::unavailable("cannot verify tokens right now; retry")
        }
    })
}

/// Keeps the key set current: refetched whenever auth announces a change, and
/// every `safety_interval` in case an announcement was missed. Sockets opened
/// with a token of a key that is gone (retired, after a compromise say) are
/// closed with 4401: they would otherwise outlive the key for good.
pub async fn watch_key_changes(
    mut changes: async_nats::Subscriber,
    verifier: Arc<Verifier>,
    registry: Arc<crate::delivery::Registry>,
    safety_interval: Duration,
    shutdown: chat_common::shutdown::CancellationToken,
) {
    use futures::StreamExt;
    let mut tick = tokio::time::interval(safety_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {},
            next = changes.next() => if next.is_none() { return },
        }
        match verifier.refresh_keys().await {
            Ok(()) => registry.close_unless_signed_by(&verifier.kids(), crate::protocol::close::UNAUTHORIZED),
            Err(e) => tracing::warn!(error = %e, "cannot refresh token signing keys"),
        }
    }
}
