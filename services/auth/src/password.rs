//! argon2id password hashing. A dummy hash is verified for unknown users so a
//! login takes the same time whether or not the username exists.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::Error;

/// OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
const LANES: u32 = 1;

#[derive(Clone)]
pub struct Hasher {
    argon2: Argon2<'static>,
    dummy_hash: String,
}

impl Hasher {
    pub fn new() -> Result<Self, Error> {
        let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
            .map_err(|e| Error::Unexpected(anyhow::anyhow!("argon2 params: {e}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut hasher = Self { argon2, dummy_hash: String::new() };
        hasher.dummy_hash = hasher.hash_blocking("not a real password")?;
        Ok(hasher)
    }

    fn hash_blocking(&self, password: &str) -> Result<String, Error> {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Unexpected(anyhow::anyhow!("hashing failed: {e}")))
    }

    /// Hashes on the blocking pool: argon2 is CPU-bound by design.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.hash_blocking(&password))
            .await
            .map_err(|e| Error::Unexpected(e.into()))?
    }

    /// Verifies against `stored`, or against the dummy hash when the user is unknown.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Error> {
        let hasher = self.clone();
        let known = stored.is_some();
        tokio::task::spawn_blocking(move || {
            let stored = stored.unwrap_or_else(|| hasher.dummy_hash.clone());
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| Error::Unexpected(anyhow::anyhow!("stored hash unreadable: {e}")))?;
            let matches = hasher.argon2.verify_password(password.as_bytes(), &parsed).is_ok();
            Ok(known && matches)
        })
        .await
        .map_err(|e| Error::Unexpected(e.into()))?
    }
}
