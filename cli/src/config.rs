//! What `chat` keeps between runs, in the user's config directory
//! (`$CHAT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/chat`, else `~/.config/chat`):
//!
//! - `credentials.json`: the server, who is logged in, and the device's
//!   token pair. Whoever reads it can act as the user, so it is created with
//!   mode 0600 (before a byte is written) and its directory with 0700.
//! - `cursors.json` (0600 too): where `chat tail` stopped, per server and
//!   user and, within that, per conversation. A tail follows one conversation
//!   and skips the others' frames, so one cursor shared by every tail would
//!   let `tail A` carry the cursor past messages a later `tail B` never saw.
//!
//! Files are replaced whole (written beside, then renamed), so a reader never
//! sees half a file. Two `chat` processes may run at once (a `tail` and a
//! `send`): updates that read before they write, and token refreshes (a
//! refresh token is single-use, and a second use revokes the device), hold
//! an exclusive lock on `.lock` in the same directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, io_cause};

const CREDENTIALS: &str = "credentials.json";
const CURSORS: &str = "cursors.json";
const LOCK: &str = ".lock";

/// A logged-in device. Deliberately not `Debug`: it holds the tokens.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub user_id: String,
    pub username: String,
    pub device_id: String,
    pub access_token: String,
    pub refresh_token: String,
}

#[derive(Debug, Clone)]
pub struct ConfigDir {
    path: PathBuf,
}

/// Held while a read-modify-write or a token refresh is under way; released
/// when dropped (the file is closed).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// `server user_id` → conversation id → cursor.
type Cursors = BTreeMap<String, BTreeMap<String, String>>;

impl ConfigDir {
    /// The directory from the environment; it is created on first write.
    ///
    /// # Errors
    /// When no variable names a place for it.
    pub fn from_env() -> Result<Self, Error> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let path = var("CHAT_CONFIG_DIR")
            .or_else(|| var("XDG_CONFIG_HOME").map(|p| p.join("chat")))
            .or_else(|| var("HOME").map(|p| p.join(".config").join("chat")))
            .ok_or_else(|| Error::local("no config directory: set CHAT_CONFIG_DIR or HOME"))?;
        Ok(Self { path })
    }

    /// The stored credentials.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] when there are none; [`Error::Local`] when the
    /// file cannot be read or is not ours.
    pub fn credentials(&self) -> Result<Credentials, Error> {
        self.read(CREDENTIALS)?.ok_or(Error::NotLoggedIn)
    }

    /// Replaces the stored credentials (mode 0600).
    pub fn save_credentials(&self, credentials: &Credentials) -> Result<(), Error> {
        let text = serde_json::to_vec_pretty(credentials).expect("credentials serialize");
        self.write_private(CREDENTIALS, &text, true)
    }

    /// Forgets the credentials (nothing to do when there are none).
    pub fn remove_credentials(&self) -> Result<(), Error> {
        let path = self.path.join(CREDENTIALS);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(file_error("remove", &path, &e)),
            _ => Ok(()),
        }
    }

    /// Where the last tail of `conversation` stopped, for this user on this server.
    pub fn cursor(&self, who: &Credentials, conversation: &str) -> Result<Option<String>, Error> {
        let cursors: Cursors = self.read(CURSORS)?.unwrap_or_default();
        Ok(cursors.get(&cursor_key(who)).and_then(|c| c.get(conversation)).cloned())
    }

    /// Stores `cursor` for `conversation` (mode 0600), under the lock so a
    /// tail of another conversation running at the same time keeps its own.
    pub fn save_cursor(&self, who: &Credentials, conversation: &str, cursor: &str) -> Result<(), Error> {
        let _lock = self.lock()?;
        let mut cursors: Cursors = self.read(CURSORS)?.unwrap_or_default();
        let mine = cursors.entry(cursor_key(who)).or_default();
        if mine.get(conversation).is_some_and(|c| c == cursor) {
            return Ok(());
        }
        mine.insert(conversation.to_owned(), cursor.to_owned());
        let text = serde_json::to_vec_pretty(&cursors).expect("cursors serialize");
        // A cursor lost in a crash costs a replay, never a message: no fsync.
        self.write_private(CURSORS, &text, false)
    }

    /// Takes the directory's lock, waiting for another `chat` that holds it.
    pub fn lock(&self) -> Result<Lock, Error> {
        self.create_dir()?;
        let path = self.path.join(LOCK);
        let file = private_options().read(true).write(true).create(true).truncate(false).open(&path);
        let file = file.map_err(|e| file_error("open", &path, &e))?;
        file.lock().map_err(|e| file_error("lock", &path, &e))?;
        Ok(Lock { _file: file })
    }

    fn read<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        let path = self.path.join(name);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(file_error("read", &path, &e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::local(format!("{} is damaged ({e}); remove it, or run `chat login`", path.display())))
    }

    fn create_dir(&self) -> Result<(), Error> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.path).map_err(|e| file_error("create", &self.path, &e))
    }

    /// Writes `name` whole: a new 0600 file beside it, then a rename over
    /// it, so the old file's mode never carries over and no reader sees half.
    fn write_private(&self, name: &str, bytes: &[u8], durable: bool) -> Result<(), Error> {
        self.create_dir()?;
        let path = self.path.join(name);
        let temporary = self.path.join(format!(".{name}.{}", std::process::id()));
        let _ = fs::remove_file(&temporary);
        let written = (|| {
            let mut file = private_options().write(true).create_new(true).open(&temporary)?;
            file.write_all(bytes)?;
            if durable {
                file.sync_all()?;
            }
            fs::rename(&temporary, &path)
        })();
        written.map_err(|e| {
            let _ = fs::remove_file(&temporary);
            file_error("write", &path, &e)
        })
    }
}

fn cursor_key(who: &Credentials) -> String {
    format!("{} {}", who.server, who.user_id)
}

/// Options for a file only its owner may read, whatever the umask.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn file_error(doing: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::local(format!("cannot {doing} {}: {}", path.display(), io_cause(e)))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn credentials(refresh: &str) -> Credentials {
        Credentials {
            server: "http://127.0.0.1:1".into(),
            user_id: "u".into(),
            username: "alice".into(),
            device_id: "d".into(),
            access_token: "a".into(),
            refresh_token: refresh.into(),
        }
    }

    fn scratch() -> ConfigDir {
        let path = std::env::temp_dir().join(format!("chat-cli-config-{}", uuid::Uuid::new_v4()));
        ConfigDir { path: path.join("nested") }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn credentials_are_kept_private_and_replaced_whole() {
        let dir = scratch();
        assert!(matches!(dir.credentials(), Err(Error::NotLoggedIn)));
        dir.save_credentials(&credentials("r1")).unwrap();
        let file = dir.path.as_path().join(CREDENTIALS);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        dir.save_credentials(&credentials("r2")).unwrap();
        assert_eq!(dir.credentials().unwrap().refresh_token, "r2");
        assert_eq!((mode(&file), mode(dir.path.as_path())), (0o600, 0o700));
        dir.remove_credentials().unwrap();
        dir.remove_credentials().unwrap();
        assert!(matches!(dir.credentials(), Err(Error::NotLoggedIn)));
        let _ = fs::remove_dir_all(dir.path.as_path().parent().unwrap());
    }

    #[test]
    fn cursors_are_kept_per_user_and_conversation() {
        let dir = scratch();
        let (alice, mut bob) = (credentials("r"), credentials("r"));
        bob.user_id = "b".into();
        dir.save_cursor(&alice, "c1", "x1").unwrap();
        dir.save_cursor(&alice, "c2", "y1").unwrap();
        dir.save_cursor(&alice, "c1", "x2").unwrap();
        assert_eq!(dir.cursor(&alice, "c1").unwrap().as_deref(), Some("x2"));
        assert_eq!(dir.cursor(&alice, "c2").unwrap().as_deref(), Some("y1"));
        assert_eq!(dir.cursor(&bob, "c1").unwrap(), None);
        assert_eq!(mode(&dir.path.as_path().join(CURSORS)), 0o600);
        let _ = fs::remove_dir_all(dir.path.as_path().parent().unwrap());
    }

    #[test]
    fn a_damaged_file_says_where_it_is_and_what_to_do() {
        let dir = scratch();
        dir.create_dir().unwrap();
        fs::write(dir.path.as_path().join(CREDENTIALS), "{not json").unwrap();
        let error = dir.credentials().err().unwrap().to_string();
        assert!(error.contains("credentials.json is damaged") && error.contains("chat login"), "{error}");
        let _ = fs::remove_dir_all(dir.path.as_path().parent().unwrap());
    }
}
