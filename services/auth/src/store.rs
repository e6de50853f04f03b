//! Persistence of users, devices, refresh tokens and signing keys. Every query
//! binds its values; none is built by formatting.

use chat_common::db::WriteConnection;
use sqlx::{AnyPool, Row};

use crate::error::Error;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub deactivated: bool,
}

/// A user as an operator sees them.
pub struct UserRecordRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub created_at_ms: i64,
    pub deactivated_at_ms: Option<i64>,
    pub active_devices: i64,
}

pub struct SigningKeyRow {
    pub kid: String,
    pub private_key_pkcs8: String,
    pub public_key_x: String,
    pub created_at_ms: i64,
    pub retired_at_ms: Option<i64>,
}

pub struct DeviceRow {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub last_seen_at_ms: i64,
}

fn key_from_row(row: &sqlx::any::AnyRow) -> Result<SigningKeyRow, sqlx::Error> {
    Ok(SigningKeyRow {
        kid: row.try_get("kid")?,
        private_key_pkcs8: row.try_get("private_key_pkcs8")?,
        public_key_x: row.try_get("public_key_x")?,
        created_at_ms: row.try_get("created_at_ms")?,
        retired_at_ms: row.try_get("retired_at_ms")?,
    })
}

pub struct RefreshTokenRow {
    pub device_id: String,
    pub user_id: String,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
    pub device_revoked: bool,
}

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        deactivated: row.try_get::<Option<i64>, _>("deactivated_at_ms")?.is_some(),
        password_hash: row.try_get("password_hash")?,
    })
}

impl Store {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Inserts a user; `Err(UsernameTaken)` when the lower-cased name exists.
    pub async fn insert_user(&self, user: &UserRow, now_ms: i64) -> Result<(), Error> {
        let result = sqlx::query(
            "INSERT INTO users (id, username, username_lower, display_name, password_hash, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(user.username.to_lowercase())
        .bind(&user.display_name)
        .bind(&user.password_hash)
        .bind(now_ms)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if chat_common::db::is_unique_violation(&e) => Err(Error::UsernameTaken),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, Error> {
        let row = sqlx::query(
            "SELECT id, username, display_name, password_hash, deactivated_at_ms FROM users WHERE username_lower = $1",
        )
        .bind(username.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, Error> {
        let row =
            sqlx::query("SELECT id, username, display_name, password_hash, deactivated_at_ms FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Users whose lower-cased username starts with `prefix` (already lower
    /// case, `\`, `%` and `_` escaped for LIKE), or whose id is `id`.
    pub async fn find_users(&self, id: &str, escaped_prefix: &str, limit: u32) -> Result<Vec<UserRecordRow>, Error> {
        let rows = sqlx::query(
            "SELECT u.id, u.username, u.display_name, u.created_at_ms, u.deactivated_at_ms,
                    (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id AND d.revoked_at_ms IS NULL) AS active_devices
             FROM users u WHERE u.id = $1 OR u.username_lower LIKE $2 ESCAPE '\\'
             ORDER BY u.username_lower LIMIT $3",
        )
        .bind(id)
        .bind(format!("{escaped_prefix}%"))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UserRecordRow {
                    id: row.try_get("id")?,
                    username: row.try_get("username")?,
                    display_name: row.try_get("display_name")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    deactivated_at_ms: row.try_get("deactivated_at_ms")?,
                    active_devices: row.try_get("active_devices")?,
                })
            })
            .collect()
    }

    /// Marks the user deactivated; `None` for an unknown user, else whether
    /// this call did it, and the devices still to revoke.
    pub async fn deactivate_user(&self, user_id: &str, now_ms: i64) -> Result<Option<(bool, Vec<String>)>, Error> {
        let now = sqlx::query("UPDATE users SET deactivated_at_ms = $1 WHERE id = $2 AND deactivated_at_ms IS NULL")
            .bind(now_ms)
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1;
        if !now && self.user_by_id(user_id).await?.is_none() {
            return Ok(None);
        }
        let devices = sqlx::query_scalar("SELECT id FROM devices WHERE user_id = $1 AND revoked_at_ms IS NULL")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Some((now, devices)))
    }

    /// Scrubs an erased user's profile and deletes their devices and refresh
    /// tokens, in one transaction; returns how many devices went (`None` for
    /// an unknown user). Revoke the devices first, so their sockets close.
    pub async fn erase_user(&self, user_id: &str, now_ms: i64) -> Result<Option<u64>, Error> {
        let mut tx = self.pool.begin().await?;
        let erased_name = format!("erased-{user_id}");
        let found = sqlx::query(
            "UPDATE users SET username = $1, username_lower = $1, display_name = 'Deleted user', password_hash = '',
                    deactivated_at_ms = COALESCE(deactivated_at_ms, $2), erased_at_ms = COALESCE(erased_at_ms, $2)
             WHERE id = $3",
        )
        .bind(&erased_name)
        .bind(now_ms)
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if found == 0 {
            return Ok(None);
        }
        sqlx::query("DELETE FROM refresh_tokens WHERE device_id IN (SELECT id FROM devices WHERE user_id = $1)")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let devices = sqlx::query("DELETE FROM devices WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(devices.rows_affected()))
    }

    /// Creates a device with its first refresh token, atomically.
    pub async fn insert_device(
        &self,
        device_id: &str,
        user_id: &str,
        name: &str,
        refresh_hash: &str,
        now_ms: i64,
        refresh_expires_ms: i64,
    ) -> Result<(), Error> {
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, created_at_ms, last_seen_at_ms) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(device_id)
        .bind(user_id)
        .bind(name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        insert_refresh(&mut tx, refresh_hash, device_id, now_ms, refresh_expires_ms).await?;
        tx.commit().await?;
        connection.succeeded();
        Ok(())
    }

    pub async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshTokenRow>, Error> {
        let row = sqlx::query(
            "SELECT r.device_id, d.user_id, r.expires_at_ms, r.used_at_ms, d.revoked_at_ms
             FROM refresh_tokens r JOIN devices d ON d.id = r.device_id
             WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RefreshTokenRow {
            device_id: row.try_get("device_id")?,
            user_id: row.try_get("user_id")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            used_at_ms: row.try_get("used_at_ms")?,
            device_revoked: row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some(),
        }))
    }

    /// Spends `old_hash` and stores `new_hash` in one transaction. Returns false
    /// when `old_hash` was spent concurrently (the caller treats that as re-use).
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        device_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<bool, Error> {
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let spent =
            sqlx::query("UPDATE refresh_tokens SET used_at_ms = $1 WHERE token_hash = $2 AND used_at_ms IS NULL")
                .bind(now_ms)
                .bind(old_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if spent != 1 {
            tx.rollback().await?;
            connection.succeeded();
            return Ok(false);
        }
        insert_refresh(&mut tx, new_hash, device_id, now_ms, expires_ms).await?;
        sqlx::query("UPDATE devices SET last_seen_at_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        connection.succeeded();
        Ok(true)
    }

    /// Marks the device revoked; its refresh tokens stop working. Returns false
    /// when the device does not belong to `user_id`.
    pub async fn revoke_device(&self, user_id: &str, device_id: &str, now_ms: i64) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE devices SET revoked_at_ms = COALESCE(revoked_at_ms, $1) WHERE id = $2 AND user_id = $3",
        )
        .bind(now_ms)
        .bind(device_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Non-retired keys, newest first.
    pub async fn active_signing_keys(&self) -> Result<Vec<SigningKeyRow>, Error> {
        let rows = sqlx::query(
            "SELECT kid, private_key_pkcs8, public_key_x, created_at_ms, retired_at_ms FROM signing_keys
             WHERE retired_at_ms IS NULL ORDER BY created_at_ms DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
    }

    /// Every key, retired ones included, newest first.
    pub async fn all_signing_keys(&self) -> Result<Vec<SigningKeyRow>, Error> {
        let rows = sqlx::query(
            "SELECT kid, private_key_pkcs8, public_key_x, created_at_ms, retired_at_ms FROM signing_keys
             ORDER BY created_at_ms DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
    }

    /// Retires a key; false when there is no such non-retired key.
    pub async fn retire_signing_key(&self, kid: &str, now_ms: i64) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE signing_keys SET retired_at_ms = $1 WHERE kid = $2 AND retired_at_ms IS NULL")
            .bind(now_ms)
            .bind(kid)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(done == 1)
    }

    /// The user's devices that are not revoked, newest first.
    pub async fn devices_of(&self, user_id: &str) -> Result<Vec<DeviceRow>, Error> {
        let rows = sqlx::query(
            "SELECT id, name, created_at_ms, last_seen_at_ms FROM devices
             WHERE user_id = $1 AND revoked_at_ms IS NULL ORDER BY created_at_ms DESC, id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceRow {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    last_seen_at_ms: row.try_get("last_seen_at_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub async fn insert_signing_key(&self, key: &SigningKeyRow) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key_pkcs8, public_key_x, created_at_ms)
             VALUES ($1, 'EdDSA', $2, $3, $4)",
        )
        .bind(&key.kid)
        .bind(&key.private_key_pkcs8)
        .bind(&key.public_key_x)
        .bind(key.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

async fn insert_refresh(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    token_hash: &str,
    device_id: &str,
    now_ms: i64,
    expires_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, device_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash)
    .bind(device_id)
    .bind(now_ms)
    .bind(expires_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
