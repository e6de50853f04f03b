//! The `chat.auth.v1.AuthService` gRPC API.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_proto::auth::v1::{
    DeactivateUserRequest, DeactivateUserResponse, Device, EraseUserRequest, EraseUserResponse, FindUsersRequest,
    FindUsersResponse, GetJwksRequest, GetJwksResponse, GetUserByUsernameRequest, GetUserRequest, ListDevicesRequest,
    ListDevicesResponse, ListSigningKeysRequest, ListSigningKeysResponse, LoginRequest, RefreshRequest,
    RegisterRequest, RegisterResponse, RetireSigningKeyRequest, RevokeDeviceRequest, RevokeDeviceResponse,
    RotateSigningKeyRequest, SigningKey, TokenPair, User, UserRecord, auth_service_server::AuthService,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::error::Error;
use crate::keys::{self, Keyring};
use crate::password::Hasher;
use crate::store::{Store, UserRow};
use crate::validate;
use chat_common::rate_limit::Limiter;

const DISPLAY_NAME_MAX: usize = 64;
const DEVICE_NAME_MAX: usize = 64;
const CLIENT_ADDRESS_MAX: usize = 64;

/// What revoking a device and changing keys must tell the rest of the system.
pub struct Announcer {
    pub nats: async_nats::Client,
    pub revoked: async_nats::jetstream::kv::Store,
}

impl Announcer {
    /// Records the revocation where every gateway watches: they refuse the
    /// device's tokens and close its sockets.
    async fn device_revoked(&self, user_id: &str, device_id: &str) -> Result<(), Error> {
        self.revoked
            .put(device_id, user_id.to_owned().into())
            .await
            .map(|_| ())
            .map_err(|e| Error::Unavailable(format!("cannot publish the revocation: {e}")))
    }

    async fn keys_changed(&self) -> Result<(), Error> {
        self.nats
            .publish(chat_common::nats::KEYS_CHANGED_SUBJECT, bytes::Bytes::new())
            .await
            .map_err(|e| Error::Unavailable(format!("cannot announce the key change: {e}")))
    }
}

pub struct Limits {
    pub login_per_address: Limiter,
    pub login_failures_per_username: Limiter,
    pub register_per_address: Limiter,
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        Self {
            login_per_address: Limiter::new(config.login_per_address),
            login_failures_per_username: Limiter::new(config.login_failures_per_username),
            register_per_address: Limiter::new(config.register_per_address),
        }
    }
}

pub struct AuthGrpc {
    config: Config,
    store: Store,
    keys: Arc<Keyring>,
    passwords: Hasher,
    limits: Limits,
    announcer: Announcer,
}

impl AuthGrpc {
    pub fn new(config: Config, store: Store, keys: Arc<Keyring>, passwords: Hasher, announcer: Announcer) -> Self {
        let limits = Limits::new(&config);
        Self { config, store, keys, passwords, limits, announcer }
    }

    /// A fresh opaque refresh token and the hash that is stored in its place.
    fn new_refresh_token() -> Result<(String, String), Error> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| Error::Unexpected(anyhow::anyhow!("no randomness: {e}")))?;
        let token = URL_SAFE_NO_PAD.encode(raw);
        let hash = hash_refresh_token(&token);
        Ok((token, hash))
    }

    fn pair(&self, user_id: &str, device_id: &str, refresh_token: String) -> Result<TokenPair, Error> {
        Ok(TokenPair {
            access_token: self.keys.access_token(user_id, device_id)?,
            refresh_token,
            expires_in: self.keys.ttl_secs(),
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
        })
    }

    fn refresh_expiry(&self, now_ms: i64) -> i64 {
        now_ms + self.config.refresh_token_ttl_secs * 1000
    }

    async fn register(&self, req: RegisterRequest, peer: Option<SocketAddr>) -> Result<RegisterResponse, Error> {
        let address = client_address(&req.client_address, peer)?;
        self.limits.register_per_address.take(&address).map_err(Error::RateLimited)?;
        validate::username(&req.username)?;
        validate::password(&req.password)?;
        let display_name = validate::optional_name("display_name", &req.display_name, DISPLAY_NAME_MAX)?
            .unwrap_or_else(|| req.username.clone());
        let password_hash = self.passwords.hash(req.password).await?;
        let user = UserRow {
            id: uuid::Uuid::now_v7().to_string(),
            username: req.username,
            display_name,
            password_hash,
            deactivated: false,
        };
        self.store.insert_user(&user, chat_common::time::now_ms()).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(RegisterResponse { user_id: user.id, username: user.username })
    }

    async fn login(&self, req: LoginRequest, peer: Option<SocketAddr>) -> Result<TokenPair, Error> {
        let address = client_address(&req.client_address, peer)?;
        self.limits.login_per_address.take(&address).map_err(Error::RateLimited)?;
        let username_key = req.username.to_lowercase();
        // Refused before any work while this username is locked out, whether or
        // not it exists, so the answer reveals nothing about the account.
        self.limits.login_failures_per_username.check(&username_key).map_err(Error::RateLimited)?;
        // Malformed input cannot name a real account; it is answered like a
        // wrong password, after the same work.
        let well_formed = validate::username(&req.username).is_ok() && validate::password(&req.password).is_ok();
        let device_name = validate::optional_name("device_name", &req.device_name, DEVICE_NAME_MAX)?
            .unwrap_or_else(|| "unnamed device".to_owned());
        let user = if well_formed { self.store.user_by_username(&req.username).await? } else { None };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.passwords.verify(req.password, stored).await?;
        let Some(user) = user.filter(|_| verified) else {
            let _ = self.limits.login_failures_per_username.take(&username_key);
            return Err(Error::InvalidCredentials);
        };
        if user.deactivated {
            return Err(Error::Deactivated);
        }
        let device_id = uuid::Uuid::now_v7().to_string();
        let (refresh, refresh_hash) = Self::new_refresh_token()?;
        let now = chat_common::time::now_ms();
        self.store
            .insert_device(&device_id, &user.id, &device_name, &refresh_hash, now, self.refresh_expiry(now))
            .await?;
        tracing::info!(user_id = %user.id, %device_id, "device logged in");
        self.pair(&user.id, &device_id, refresh)
    }

    async fn refresh(&self, req: RefreshRequest) -> Result<TokenPair, Error> {
        if req.refresh_token.is_empty() || req.refresh_token.len() > 128 {
            return Err(Error::InvalidRefreshToken);
        }
        let old_hash = hash_refresh_token(&req.refresh_token);
        let row = self.store.refresh_token(&old_hash).await?.ok_or(Error::InvalidRefreshToken)?;
        let now = chat_common::time::now_ms();
        if row.device_revoked || row.expires_at_ms <= now {
            return Err(Error::InvalidRefreshToken);
        }
        let (refresh, new_hash) = Self::new_refresh_token()?;
        let rotated = row.used_at_ms.is_none()
            && self
                .store
                .rotate_refresh_token(&old_hash, &new_hash, &row.device_id, now, self.refresh_expiry(now))
                .await?;
        if !rotated {
            // A spent token presented again: someone holds a copy. The whole
            // device goes: refresh tokens, access tokens, live sockets.
            self.store.revoke_device(&row.user_id, &row.device_id, now).await?;
            self.announcer.device_revoked(&row.user_id, &row.device_id).await?;
            tracing::warn!(device_id = %row.device_id, "refresh token re-used; device revoked");
            return Err(Error::InvalidRefreshToken);
        }
        self.pair(&row.user_id, &row.device_id, refresh)
    }

    async fn revoke_device(&self, req: RevokeDeviceRequest) -> Result<RevokeDeviceResponse, Error> {
        let user_id = validate::uuid("user_id", &req.user_id)?.to_string();
        let device_id = validate::uuid("device_id", &req.device_id)?.to_string();
        if !self.store.revoke_device(&user_id, &device_id, chat_common::time::now_ms()).await? {
            return Err(Error::DeviceNotFound);
        }
        self.announcer.device_revoked(&user_id, &device_id).await?;
        tracing::info!(%device_id, "device revoked");
        Ok(RevokeDeviceResponse {})
    }

    async fn list_devices(&self, req: ListDevicesRequest) -> Result<ListDevicesResponse, Error> {
        let user_id = validate::uuid("user_id", &req.user_id)?.to_string();
        let devices = self
            .store
            .devices_of(&user_id)
            .await?
            .into_iter()
            .map(|d| Device {
                device_id: d.id,
                name: d.name,
                created_at_ms: d.created_at_ms,
                last_seen_at_ms: d.last_seen_at_ms,
            })
            .collect();
        Ok(ListDevicesResponse { devices })
    }

    async fn list_signing_keys(&self) -> Result<ListSigningKeysResponse, Error> {
        let signing = self.keys.signing_kid();
        let keys = self
            .store
            .all_signing_keys()
            .await?
            .into_iter()
            .map(|k| SigningKey {
                signing: k.kid == signing,
                kid: k.kid,
                algorithm: "EdDSA".to_owned(),
                created_at_ms: k.created_at_ms,
                retired_at_ms: k.retired_at_ms.unwrap_or(0),
            })
            .collect();
        Ok(ListSigningKeysResponse { keys })
    }

    async fn rotate_signing_key(&self) -> Result<SigningKey, Error> {
        let row = keys::generate_key()?;
        self.store.insert_signing_key(&row).await?;
        self.keys.reload(&self.store).await?;
        self.announcer.keys_changed().await?;
        tracing::info!(kid = %row.kid, "signing key rotated");
        Ok(SigningKey {
            kid: row.kid,
            algorithm: "EdDSA".to_owned(),
            created_at_ms: row.created_at_ms,
            retired_at_ms: 0,
            signing: true,
        })
    }

    async fn retire_signing_key(&self, req: RetireSigningKeyRequest) -> Result<SigningKey, Error> {
        if req.kid.is_empty() || req.kid.len() > 64 {
            return Err(Error::InvalidArgument("kid must be 1 to 64 characters".into()));
        }
        if req.kid == self.keys.signing_kid() {
            return Err(Error::FailedPrecondition(
                "this key signs new tokens; rotate to a new key before retiring it".into(),
            ));
        }
        let now = chat_common::time::now_ms();
        if !self.store.retire_signing_key(&req.kid, now).await? {
            return Err(Error::NotFound("no such key that is not retired".into()));
        }
        self.keys.reload(&self.store).await?;
        self.announcer.keys_changed().await?;
        tracing::info!(kid = %req.kid, "signing key retired");
        let retired = self.store.all_signing_keys().await?.into_iter().find(|k| k.kid == req.kid);
        Ok(SigningKey {
            kid: req.kid,
            algorithm: "EdDSA".to_owned(),
            created_at_ms: retired.map_or(0, |k| k.created_at_ms),
            retired_at_ms: now,
            signing: false,
        })
    }

    async fn find_users(&self, req: FindUsersRequest) -> Result<FindUsersResponse, Error> {
        let query = req.query.trim();
        let limit = match req.limit {
            0 => 20,
            limit @ 1..=100 => limit,
            _ => return Err(Error::InvalidArgument("limit must be between 1 and 100".into())),
        };
        if query.is_empty() || query.chars().count() > 64 || query.chars().any(char::is_control) {
            return Err(Error::InvalidArgument("query must be 1 to 64 printable characters".into()));
        }
        let id = uuid::Uuid::parse_str(query).map(|u| u.to_string()).unwrap_or_default();
        let prefix = query.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let users = self.store.find_users(&id, &prefix, limit).await?;
        let users = users
            .into_iter()
            .map(|u| UserRecord {
                user: Some(User { user_id: u.id, username: u.username, display_name: u.display_name }),
                created_at_ms: u.created_at_ms,
                deactivated_at_ms: u.deactivated_at_ms.unwrap_or_default(),
                active_devices: u32::try_from(u.active_devices).unwrap_or(u32::MAX),
            })
            .collect();
        Ok(FindUsersResponse { users })
    }

    async fn deactivate_user(&self, req: DeactivateUserRequest) -> Result<DeactivateUserResponse, Error> {
        let user_id = validate::uuid("user_id", &req.user_id)?.to_string();
        let now = chat_common::time::now_ms();
        let (deactivated_now, devices) = self.store.deactivate_user(&user_id, now).await?.ok_or(Error::UserNotFound)?;
        // Each device as if revoked by hand: gateways close its sockets and
        // notification drops its push subscriptions.
        for device_id in &devices {
            self.store.revoke_device(&user_id, device_id, now).await?;
            self.announcer.device_revoked(&user_id, device_id).await?;
        }
        tracing::info!(%user_id, devices = devices.len(), "user deactivated");
        let devices_revoked = u32::try_from(devices.len()).unwrap_or(u32::MAX);
        Ok(DeactivateUserResponse { devices_revoked, deactivated_now })
    }

    async fn erase_user(&self, req: EraseUserRequest) -> Result<EraseUserResponse, Error> {
        // Deactivated first: its devices are revoked and announced, so every
        // socket closes before the rows go.
        self.deactivate_user(DeactivateUserRequest { user_id: req.user_id.clone() }).await?;
        let user_id = validate::uuid("user_id", &req.user_id)?.to_string();
        let devices = self.store.erase_user(&user_id, chat_common::time::now_ms()).await?.ok_or(Error::UserNotFound)?;
        tracing::info!(%user_id, devices, "user erased");
        Ok(EraseUserResponse { devices_removed: u32::try_from(devices).unwrap_or(u32::MAX) })
    }

    async fn get_user(&self, req: GetUserRequest) -> Result<User, Error> {
        let user_id = validate::uuid("user_id", &req.user_id)?.to_string();
        let user = self.store.user_by_id(&user_id).await?.ok_or(Error::UserNotFound)?;
        Ok(public_user(user))
    }

    async fn get_user_by_username(&self, req: GetUserByUsernameRequest) -> Result<User, Error> {
        validate::username(&req.username)?;
        let user = self.store.user_by_username(&req.username).await?.ok_or(Error::UserNotFound)?;
        Ok(public_user(user))
    }
}

/// The key rate limits count against: the address the gateway reports for the
/// end client, or else the gRPC peer's IP.
fn client_address(reported: &str, peer: Option<SocketAddr>) -> Result<String, Error> {
    if reported.len() > CLIENT_ADDRESS_MAX || reported.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "client_address must be at most {CLIENT_ADDRESS_MAX} printable characters"
        )));
    }
    Ok(if reported.is_empty() {
        peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string())
    } else {
        reported.to_owned()
    })
}

fn public_user(user: UserRow) -> User {
    User { user_id: user.id, username: user.username, display_name: user.display_name }
}

fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let peer = request.remote_addr();
        Ok(Response::new(self.register(request.into_inner(), peer).await?))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenPair>, Status> {
        let peer = request.remote_addr();
        let result = self.login(request.into_inner(), peer).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::InvalidCredentials) => "refused",
            Err(Error::RateLimited(_) | Error::Busy) => "rate_limited",
            Err(_) => "error",
        };
        crate::metrics::get().logins.get_or_create(&chat_common::metrics::label("outcome", outcome)).inc();
        Ok(Response::new(result?))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Result<Response<TokenPair>, Status> {
        Ok(Response::new(self.refresh(request.into_inner()).await?))
    }

    async fn revoke_device(
        &self,
        request: Request<RevokeDeviceRequest>,
    ) -> Result<Response<RevokeDeviceResponse>, Status> {
        Ok(Response::new(self.revoke_device(request.into_inner()).await?))
    }

    async fn list_devices(
        &self,
        request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        Ok(Response::new(self.list_devices(request.into_inner()).await?))
    }

    async fn find_users(&self, request: Request<FindUsersRequest>) -> Result<Response<FindUsersResponse>, Status> {
        Ok(Response::new(Self::find_users(self, request.into_inner()).await?))
    }

    async fn deactivate_user(
        &self,
        request: Request<DeactivateUserRequest>,
    ) -> Result<Response<DeactivateUserResponse>, Status> {
        Ok(Response::new(Self::deactivate_user(self, request.into_inner()).await?))
    }

    async fn erase_user(&self, request: Request<EraseUserRequest>) -> Result<Response<EraseUserResponse>, Status> {
        Ok(Response::new(Self::erase_user(self, request.into_inner()).await?))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(self.get_user(request.into_inner()).await?))
    }

    async fn get_user_by_username(&self, request: Request<GetUserByUsernameRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(self.get_user_by_username(request.into_inner()).await?))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse { jwks_json: self.keys.jwks_json() }))
    }

    async fn list_signing_keys(
        &self,
        _request: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        Ok(Response::new(self.list_signing_keys().await?))
    }

    async fn rotate_signing_key(
        &self,
        _request: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<SigningKey>, Status> {
        Ok(Response::new(self.rotate_signing_key().await?))
    }

    async fn retire_signing_key(
        &self,
        request: Request<RetireSigningKeyRequest>,
    ) -> Result<Response<SigningKey>, Status> {
        Ok(Response::new(self.retire_signing_key(request.into_inner()).await?))
    }
}
