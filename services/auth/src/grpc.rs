//! The `chat.auth.v1.AuthService` gRPC API.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_proto::auth::v1::{
    GetJwksRequest, GetJwksResponse, GetUserByUsernameRequest, GetUserRequest, LoginRequest,
    RefreshRequest, RegisterRequest, RegisterResponse, RevokeDeviceRequest, RevokeDeviceResponse,
    TokenPair, User, auth_service_server::AuthService,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::error::Error;
use crate::keys::Signer;
use crate::password::Hasher;
use crate::store::{Store, UserRow};
use crate::validate;

const DISPLAY_NAME_MAX: usize = 64;
const DEVICE_NAME_MAX: usize = 64;

pub struct AuthGrpc {
    config: Config,
    store: Store,
    signer: Signer,
    passwords: Hasher,
}

impl AuthGrpc {
    pub fn new(config: Config, store: Store, signer: Signer, passwords: Hasher) -> Self {
        Self { config, store, signer, passwords }
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
            access_token: self.signer.access_token(user_id, device_id)?,
            refresh_token,
            expires_in: self.signer.ttl_secs(),
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
        })
    }

    async fn register(&self, req: RegisterRequest) -> Result<RegisterResponse, Error> {
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
        };
        self.store.insert_user(&user, chat_common::time::now_ms()).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(RegisterResponse { user_id: user.id, username: user.username })
    }

    async fn login(&self, req: LoginRequest) -> Result<TokenPair, Error> {
        // Malformed input cannot name a real account; answer like a wrong password
        // after the same work, so the response reveals nothing.
        let well_formed = validate::username(&req.username).is_ok()
            && validate::password(&req.password).is_ok();
        let device_name = validate::optional_name("device_name", &req.device_name, DEVICE_NAME_MAX)?
            .unwrap_or_else(|| "unnamed device".to_owned());
        let user = if well_formed { self.store.user_by_username(&req.username).await? } else { None };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        if !self.passwords.verify(req.password, stored).await? {
            return Err(Error::InvalidCredentials);
        }
        let user = user.ok_or(Error::InvalidCredentials)?;
        let device_id = uuid::Uuid::now_v7().to_string();
        let (refresh, refresh_hash) = Self::new_refresh_token()?;
        let now = chat_common::time::now_ms();
        self.store
            .insert_device(&device_id, &user.id, &device_name, &refresh_hash, now, self.refresh_expiry(now))
            .await?;
        tracing::info!(user_id = %user.id, %device_id, "device logged in");
        self.pair(&user.id, &device_id, refresh)
    }

    fn refresh_expiry(&self, now_ms: i64) -> i64 {
        now_ms + self.config.refresh_token_ttl_secs * 1000
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
            // A spent token presented again: someone holds a copy. Revoke the device.
            self.store.revoke_device(&row.user_id, &row.device_id, now).await?;
            tracing::warn!(device_id = %row.device_id, "refresh token re-used; device revoked");
            return Err(Error::InvalidRefreshToken);
        }
        self.pair(&row.user_id, &row.device_id, refresh)
    }

    async fn revoke_device(&self, req: RevokeDeviceRequest) -> Result<RevokeDeviceResponse, Error> {
        validate::uuid("user_id", &req.user_id)?;
        validate::uuid("device_id", &req.device_id)?;
        if !self.store.revoke_device(&req.user_id, &req.device_id, chat_common::time::now_ms()).await? {
            return Err(Error::InvalidArgument("no such device for this user".into()));
        }
        tracing::info!(device_id = %req.device_id, "device revoked");
        Ok(RevokeDeviceResponse {})
    }

    async fn get_user(&self, req: GetUserRequest) -> Result<User, Error> {
        validate::uuid("user_id", &req.user_id)?;
        let user = self.store.user_by_id(&req.user_id).await?.ok_or(Error::UserNotFound)?;
        Ok(public_user(user))
    }

    async fn get_user_by_username(&self, req: GetUserByUsernameRequest) -> Result<User, Error> {
        validate::username(&req.username)?;
        let user = self.store.user_by_username(&req.username).await?.ok_or(Error::UserNotFound)?;
        Ok(public_user(user))
    }
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
        Ok(Response::new(self.register(request.into_inner()).await?))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenPair>, Status> {
        Ok(Response::new(self.login(request.into_inner()).await?))
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

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(self.get_user(request.into_inner()).await?))
    }

    async fn get_user_by_username(
        &self,
        request: Request<GetUserByUsernameRequest>,
    ) -> Result<Response<User>, Status> {
        Ok(Response::new(self.get_user_by_username(request.into_inner()).await?))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse { jwks_json: self.signer.jwks_json().to_owned() }))
    }
}
