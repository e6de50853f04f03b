//! Database pools for the services that own tables. SQLite is the embedded
//! default; a `postgres://` URL selects PostgreSQL. Both go through sqlx's
//! `Any` driver so each service has one set of queries and one set of
//! migrations, written in the SQL both databases share.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL (expected sqlite: or postgres://)")]
    UnsupportedUrl,
    #[error("cannot create the directory for the SQLite file: {0}")]
    Directory(#[from] std::io::Error),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// A pool connection for one write transaction, closed rather than returned
/// to the pool unless the work on it ended well ([`WriteConnection::succeeded`]).
///
/// After some errors (a full disk) SQLite rolls the transaction back by
/// itself, which sqlx does not notice: that connection's next transaction
/// would be a savepoint inside one that is never committed, so its writes
/// would report success and be lost (seen in the disk-full fault test). A
/// fresh connection has no such past.
pub struct WriteConnection {
    connection: sqlx::pool::PoolConnection<sqlx::Any>,
    succeeded: bool,
}

impl WriteConnection {
    /// # Errors
    /// When no connection can be had.
    pub async fn acquire(pool: &AnyPool) -> Result<Self, sqlx::Error> {
        Ok(Self { connection: pool.acquire().await?, succeeded: false })
    }

    /// Begins a transaction on this connection.
    ///
    /// # Errors
    /// When the database refuses.
    pub async fn begin(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Any>, sqlx::Error> {
        sqlx::Connection::begin(&mut *self.connection).await
    }

    /// The transaction was committed, or rolled back on purpose: the
    /// connection may serve again.
    pub fn succeeded(&mut self) {
        self.succeeded = true;
    }
}

impl Drop for WriteConnection {
    fn drop(&mut self) {
        if !self.succeeded {
            self.connection.close_on_drop();
        }
    }
}

/// Whether an error means the database could not be reached, went away or
/// is starting or stopping (worth retrying shortly), rather than that it
/// refused the query.
pub fn is_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08: connection exceptions; 57P01-57P03: the server
        // is shutting down or starting up.
        sqlx::Error::Database(e) => {
            e.code().is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

/// Opens a pool. For SQLite the file (and its directory) is created when
/// missing and WAL mode is switched on, so readers never wait for the writer;
/// `synchronous = FULL` puts each commit on disk before it returns, so what
/// history acknowledged to its consumer survives a power loss as the stream
/// does (NORMAL could lose the last commits, which the stream would then
/// never deliver again).
///
/// # Errors
/// When the URL is unsupported or the database cannot be reached.
pub async fn connect(url: &str, max_connections: u32) -> Result<AnyPool, DbError> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of(url).ok_or(DbError::UnsupportedUrl)?;
    let url = match backend {
        Backend::Sqlite => sqlite_url_with_create(url)?,
        Backend::Postgres => url.to_owned(),
    };
    let options = AnyConnectOptions::from_str(&url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;")
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// `sqlite:path` with `mode=rwc` so a missing file is created, and the parent
/// directory created too.
fn sqlite_url_with_create(url: &str) -> Result<String, std::io::Error> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    if !path.is_empty()
        && path != ":memory:"
        && let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// Whether an error is a unique-constraint violation, on either backend.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || db.code().is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
        }
        _ => false,
    }
}
