//! A real S3 API for the media service's tests, from moto: `moto_server`
//! (pinned in scripts/media-requirements.txt, installed into `.tools/venv` by
//! scripts/install-tools.sh) on a free port, its buckets in memory, killed
//! with the test.
//!
//! moto checks no signatures: any credentials pass, and these are the fixed
//! ones the tests use. Like S3, it takes bucket names of 3 to 63 characters
//! only. A request without an `Authorization` header counts as anonymous, and
//! moto refuses one that reads or overwrites an existing private object (403);
//! signed requests, such as the media service's, are not affected. An object
//! sent as `application/x-www-form-urlencoded` (curl's default for `--data`)
//! is stored empty: moto's web framework reads that body as a form.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The access key id every test signs with (moto accepts any).
pub const ACCESS_KEY_ID: &str = "test";
/// The secret access key that goes with [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "test";
/// The region the buckets are in.
pub const REGION: &str = "us-east-1";

/// How long `moto_server` may take to answer HTTP (about 0.8 s on an idle
/// machine; Python's imports take much longer on a busy one).
const STARTUP_LIMIT: Duration = Duration::from_secs(30);

/// A `moto_server` child process on 127.0.0.1: a fresh, empty S3 per value,
/// killed when dropped.
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    http: reqwest::Client,
}

/// The `moto_server` scripts/install-tools.sh put in `.tools/venv/bin`.
pub fn binary() -> PathBuf {
    let local = crate::workspace_root().join(".tools/venv/bin/moto_server");
    assert!(local.exists(), "moto_server not found at {}: run scripts/install-tools.sh", local.display());
    local
}

impl S3Server {
    /// Starts a server on a free port and waits until it answers HTTP.
    /// Panics if `moto_server` is not installed.
    pub async fn start() -> Self {
        let port = crate::ports::free_port();
        let child = Command::new(binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .kill_on_drop(true)
            .spawn()
            .expect("moto_server starts");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
        let mut server = Self { child: Some(child), port, http };
        server.wait_until_answering().await;
        server
    }

    /// Polls ListBuckets (`GET /`) until the server answers; panics if it
    /// exits or takes longer than [`STARTUP_LIMIT`].
    async fn wait_until_answering(&mut self) {
        let started = tokio::time::Instant::now();
        while started.elapsed() < STARTUP_LIMIT {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("moto_server exited ({status}) before answering on port {} (TEST_LOG=1 shows why)", self.port);
            }
            if self.http.get(self.endpoint()).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not answer HTTP on port {} within {STARTUP_LIMIT:?}", self.port);
    }

    /// Where clients reach it: `http://127.0.0.1:PORT` (path-style buckets).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates bucket `name` (CreateBucket: an unsigned `PUT /{name}`).
    pub async fn create_bucket(&self, name: &str) {
        let response = self.http.put(format!("{}/{name}", self.endpoint())).send().await.expect("CreateBucket");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "CreateBucket {name}: {body}");
    }

    /// The keys of every object in `bucket`, in S3's order (ListObjectsV2,
    /// following continuation tokens while the listing is truncated).
    pub async fn object_keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2")];
            if let Some(token) = &token {
                query.push(("continuation-token", token.as_str()));
            }
            let url = format!("{}/{bucket}", self.endpoint());
            let response = self.http.get(url).query(&query).send().await.expect("ListObjectsV2");
            let status = response.status();
            let body = response.text().await.expect("ListObjectsV2 body");
            assert_eq!(status, 200, "ListObjectsV2 {bucket}: {body}");
            let page = ListPage::parse(&body);
            keys.extend(page.keys);
            match page.next_token {
                Some(next) => token = Some(next),
                None => return keys,
            }
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its buckets are
    /// gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// One page of a ListObjectsV2 answer.
#[derive(Debug, PartialEq)]
struct ListPage {
    keys: Vec<String>,
    /// Where the next page starts, when this one is truncated.
    next_token: Option<String>,
}

impl ListPage {
    /// Reads the `<Key>`s, `<IsTruncated>` and `<NextContinuationToken>` of
    /// `xml` by plain string search (the answer has no nested keys).
    fn parse(xml: &str) -> Self {
        let keys = elements(xml, "Key").map(unescape).collect();
        let truncated = elements(xml, "IsTruncated").next() == Some("true");
        let next_token = truncated.then(|| {
            let token = elements(xml, "NextContinuationToken").next();
            unescape(token.unwrap_or_else(|| panic!("a truncated listing without a continuation token: {xml}")))
        });
        Self { keys, next_token }
    }
}

/// The texts of every `<tag>…</tag>` in `xml`, in order.
fn elements<'a>(xml: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let end = start + rest[start..].find(&close)?;
        let text = &rest[start..end];
        rest = &rest[end + close.len()..];
        Some(text)
    })
}

/// XML text with its entities (`&amp;`, `&#38;`, `&#x26;` …) replaced.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';').unwrap_or_else(|| panic!("a bare & in XML text: {text}"));
        let entity = &rest[amp + 1..amp + semi];
        let named = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        let character = named.unwrap_or_else(|| panic!("unknown XML entity &{entity}; in {text}"));
        out.push(character);
        rest = &rest[amp + semi + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_gives_its_keys_unescaped_and_where_the_next_starts() {
        // What moto 5.2.6 answers for `?list-type=2&max-keys=2`, shortened.
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated><Contents><Key>dir/a b&amp;c.txt</Key><Size>5</Size></Contents><Contents><Key>x&#38;&#x3C;y</Key><Size>0</Size></Contents><Name>media</Name><Prefix/><MaxKeys>2</MaxKeys><KeyCount>2</KeyCount><NextContinuationToken>73ba1ff8</NextContinuationToken></ListBucketResult>"#;
        let page = ListPage::parse(xml);
        assert_eq!(page.keys, ["dir/a b&c.txt", "x&<y"]);
        assert_eq!(page.next_token.as_deref(), Some("73ba1ff8"));

        let last = xml.replace("<IsTruncated>true", "<IsTruncated>false");
        assert_eq!(ListPage::parse(&last).next_token, None);
        let empty = ListPage::parse("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>");
        assert_eq!(empty, ListPage { keys: Vec::new(), next_token: None });
    }
}
