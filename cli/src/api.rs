//! HTTP to the gateway, protocol v1 (`/v1/...`), and nothing else: a JSON
//! body out, a JSON body back, and every failure turned into the one error
//! the user reads. A non-2xx answer is the protocol's error body
//! `{"error": {"code", "message"}}`, shown as it came; no answer at all is
//! "cannot reach <server>: <cause>".
//!
//! [`Session`] is a logged-in device. Access tokens live minutes: on a 401
//! it refreshes once (`POST /v1/auth/refresh`), stores the new pair at once
//! and retries; a refused refresh means the device is logged out. Refresh
//! tokens are single-use and a second use revokes the device, so the refresh
//! runs under the config directory's lock and first rereads the stored pair:
//! another `chat` may have refreshed a moment ago.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::config::{ConfigDir, Credentials};
use crate::error::{Error, root_cause};

/// What this client calls itself in the device list.
pub const DEVICE_NAME: &str = "chat CLI";

/// The gateway at one base URL, without credentials.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// A call's path and query, e.g. `/v1/search` with `[("q", "lunch")]`.
pub struct Call<'a> {
    pub method: Method,
    pub path: String,
    pub query: &'a [(&'a str, String)],
    pub body: Option<Value>,
}

impl<'a> Call<'a> {
    pub fn get(path: impl Into<String>) -> Self {
        Self { method: Method::GET, path: path.into(), query: &[], body: None }
    }

    pub fn new(method: Method, path: impl Into<String>, body: Option<Value>) -> Self {
        Self { method, path: path.into(), query: &[], body }
    }

    pub fn query(self, query: &'a [(&'a str, String)]) -> Self {
        Self { query, ..self }
    }
}

impl Api {
    pub fn new(base: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("chat-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::local(format!("cannot start an HTTP client: {}", root_cause(&e))))?;
        Ok(Self { base: base.to_owned(), http })
    }

    /// The server's base URL, as the user gave it (without a trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request; the answer's JSON (`Null` for an empty body, as 204 has).
    ///
    /// # Errors
    /// [`Error::Server`] for a non-2xx answer, [`Error::Unreachable`] when
    /// none came.
    pub async fn call(&self, call: &Call<'_>, token: Option<&str>) -> Result<Value, Error> {
        let mut request = self.http.request(call.method.clone(), format!("{}{}", self.base, call.path));
        if !call.query.is_empty() {
            request = request.query(call.query);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        let body: Option<Value> = serde_json::from_slice(&text).ok();
        if status.is_success() {
            return match body {
                Some(body) => Ok(body),
                None if text.is_empty() => Ok(Value::Null),
                None => Err(self.unexpected(format!("{status} with a body that is not JSON"))),
            };
        }
        Err(server_error(status, body.as_ref()))
    }

    /// `POST /v1/auth/register`.
    pub async fn register(&self, username: &str, password: &str) -> Result<Value, Error> {
        let body = json!({ "username": username, "password": password });
        self.call(&Call::new(Method::POST, "/v1/auth/register", Some(body)), None).await
    }

    /// `POST /v1/auth/login` as a new device, then `GET /v1/users/me` for
    /// the username as the server spells it.
    pub async fn login(&self, username: &str, password: &str) -> Result<Credentials, Error> {
        let body = json!({ "username": username, "password": password, "device_name": DEVICE_NAME });
        let answer = self.call(&Call::new(Method::POST, "/v1/auth/login", Some(body)), None).await?;
        let field = |name: &str| {
            answer[name].as_str().map(str::to_owned).ok_or_else(|| self.unexpected(format!("a login without {name}")))
        };
        let mut credentials = Credentials {
            server: self.base.clone(),
            user_id: field("user_id")?,
            username: username.to_owned(),
            device_id: field("device_id")?,
            access_token: field("access_token")?,
            refresh_token: field("refresh_token")?,
        };
        let me = self.call(&Call::get("/v1/users/me"), Some(&credentials.access_token)).await?;
        if let Some(name) = me["username"].as_str() {
            name.clone_into(&mut credentials.username);
        }
        Ok(credentials)
    }

    /// `POST /v1/auth/refresh`: the new pair, or `None` when the server
    /// refuses the refresh token (used, revoked, unknown, malformed).
    async fn refresh(&self, refresh_token: &str) -> Result<Option<(String, String)>, Error> {
        let body = json!({ "refresh_token": refresh_token });
        match self.call(&Call::new(Method::POST, "/v1/auth/refresh", Some(body)), None).await {
            Ok(pair) => match (pair["access_token"].as_str(), pair["refresh_token"].as_str()) {
                (Some(access), Some(refresh)) => Ok(Some((access.to_owned(), refresh.to_owned()))),
                _ => Err(self.unexpected("a refresh without a token pair".into())),
            },
            Err(Error::Server { code, .. }) if code == "unauthorized" || code == "invalid_argument" => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn unreachable(&self, error: &reqwest::Error) -> Error {
        let cause = if error.is_timeout() { "timed out".to_owned() } else { root_cause(error) };
        Error::Unreachable { server: self.base.clone(), cause }
    }

    pub fn unexpected(&self, what: String) -> Error {
        Error::Unexpected { server: self.base.clone(), what }
    }
}

/// The protocol's error body as it came, or, for an answer without one
/// (a proxy's 502), the status.
pub fn server_error(status: StatusCode, body: Option<&Value>) -> Error {
    let error = body.map(|b| &b["error"]);
    match error.map(|e| (e["code"].as_str(), e["message"].as_str())) {
        Some((Some(code), Some(message))) => Error::Server { code: code.to_owned(), message: message.to_owned() },
        _ => Error::Server {
            code: format!("http_{}", status.as_u16()),
            message: status.canonical_reason().unwrap_or("no explanation").to_lowercase(),
        },
    }
}

/// A logged-in device: calls carry its access token, renewed when it runs out.
pub struct Session {
    api: Api,
    credentials: Credentials,
    config: ConfigDir,
    /// Usernames by user id, as looked up during this run (`None`: no such user).
    usernames: HashMap<String, Option<String>>,
}

impl Session {
    /// The stored device.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] without stored credentials.
    pub fn resume(config: ConfigDir) -> Result<Self, Error> {
        let credentials = config.credentials()?;
        Ok(Self { api: Api::new(&credentials.server)?, credentials, config, usernames: HashMap::new() })
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn config(&self) -> &ConfigDir {
        &self.config
    }

    /// An authenticated call, refreshing the tokens once on a 401.
    ///
    /// # Errors
    /// As [`Api::call`]; [`Error::NotLoggedIn`] when the refresh is refused.
    pub async fn call(&mut self, call: Call<'_>) -> Result<Value, Error> {
        match self.api.call(&call, Some(&self.credentials.access_token)).await {
            Err(Error::Server { code, .. }) if code == "unauthorized" => {
                self.refresh().await?;
                self.api.call(&call, Some(&self.credentials.access_token)).await.map_err(|e| match e {
                    Error::Server { code, .. } if code == "unauthorized" => Error::NotLoggedIn,
                    e => e,
                })
            }
            answer => answer,
        }
    }

    pub async fn get(&mut self, path: impl Into<String>) -> Result<Value, Error> {
        self.call(Call::get(path)).await
    }

    /// The username of `user_id` (`GET /v1/users/{id}`), once per run;
    /// `None` for an id that names nobody (or no longer looks as if it did).
    pub async fn username(&mut self, user_id: &str) -> Result<Option<String>, Error> {
        if let Some(known) = self.usernames.get(user_id) {
            return Ok(known.clone());
        }
        let found = match self.get(format!("/v1/users/{}", segment(user_id))).await {
            Ok(user) => user["username"].as_str().map(str::to_owned),
            Err(Error::Server { code, .. }) if code == "not_found" || code == "invalid_argument" => None,
            Err(e) => return Err(e),
        };
        self.usernames.insert(user_id.to_owned(), found.clone());
        Ok(found)
    }

    /// The user called `username` (`GET /v1/users/by-username/{username}`).
    pub async fn user_named(&mut self, username: &str) -> Result<Value, Error> {
        let user = self.get(format!("/v1/users/by-username/{}", segment(username))).await?;
        if let (Some(id), Some(name)) = (user["user_id"].as_str(), user["username"].as_str()) {
            self.usernames.insert(id.to_owned(), Some(name.to_owned()));
        }
        Ok(user)
    }

    /// Renews the token pair and stores it, or takes the pair another
    /// `chat` stored since this one read it.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] when the server refuses the refresh token.
    pub async fn refresh(&mut self) -> Result<(), Error> {
        let _lock = self.config.lock()?;
        if let Ok(stored) = self.config.credentials()
            && stored.server == self.credentials.server
            && stored.device_id == self.credentials.device_id
            && stored.refresh_token != self.credentials.refresh_token
        {
            self.credentials = stored;
            return Ok(());
        }
        let (access, refresh) = self.api.refresh(&self.credentials.refresh_token).await?.ok_or(Error::NotLoggedIn)?;
        self.credentials.access_token = access;
        self.credentials.refresh_token = refresh;
        self.config.save_credentials(&self.credentials)
    }
}

/// A path segment that is the user's text (a username): percent-encoded
/// except for the characters that never need it.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_error_body_is_shown_as_it_came() {
        let body = json!({ "error": { "code": "not_found", "message": "no user with id 42" } });
        let error = server_error(StatusCode::NOT_FOUND, Some(&body));
        assert_eq!(error.to_string(), "not_found: no user with id 42");
        let error = server_error(StatusCode::BAD_GATEWAY, None);
        assert_eq!(error.to_string(), "http_502: bad gateway");
    }

    #[test]
    fn user_text_cannot_leave_its_path_segment() {
        assert_eq!(segment("alice.b-c_d"), "alice.b-c_d");
        assert_eq!(segment("a/../b?c#d e"), "a%2F..%2Fb%3Fc%23d%20e");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
