//! Attachments end to end (issue 20): files streamed through the gateway to
//! media and kept in a directory or in S3 (moto's real S3 API), read back
//! whole or by byte range by their uploader only, and every bad upload
//! refused with a clear error and nothing left behind: no file, no bytes
//! counted against the quota.

use std::time::Duration;

use chat_system_tests::client::{Api, Device, Ws};
use chat_system_tests::s3::{self, S3Server};
use chat_system_tests::system::System;
use chat_system_tests::{Db, on_both_databases};
use serde_json::Value;
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest file in these tests, and what one user may store.
const MAX_FILE: u64 = 16 * 1024 * 1024;
const QUOTA: u64 = 20 * 1024 * 1024;
const BUCKET: &str = "chat-media";
/// The gateway's body timeout here: a stalled upload is cut after this.
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest image here.
const MAX_IMAGE: u64 = 4 * 1024 * 1024;
/// How long an upload no message carries is kept, unless a test says.
const UNATTACHED_TTL: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy)]
enum Where {
    Directory,
    S3,
}

struct Setup {
    system: System,
    s3: Option<S3Server>,
    api: Api,
}

async fn start(db: Db, on: Where) -> Option<Setup> {
    start_with(db, on, UNATTACHED_TTL).await
}

/// As [`start`], keeping uploads no message carries for `unattached_ttl`.
async fn start_with(db: Db, on: Where, unattached_ttl: Duration) -> Option<Setup> {
    let s3 = match on {
        Where::Directory => None,
        Where::S3 => {
            let server = S3Server::start().await;
            server.create_bucket(BUCKET).await;
            Some(server)
        }
    };
    let store = s3.as_ref().map(|server| {
        chat_media::Store::S3(chat_media::S3 {
            bucket: BUCKET.to_owned(),
            endpoint: server.endpoint(),
            region: s3::REGION.to_owned(),
            access_key_id: s3::ACCESS_KEY_ID.to_owned(),
            secret_access_key: chat_media::Secret(s3::SECRET_ACCESS_KEY.to_owned()),
        })
    });
    let system = System::builder()
        .media_config(move |config| {
            config.max_file_bytes = MAX_FILE;
            config.quota_bytes = QUOTA;
            config.clean_every = Duration::from_secs(1);
            config.send_window = Duration::from_secs(1);
            config.unattached_ttl = unattached_ttl;
            config.max_image_bytes = MAX_IMAGE;
            if let Some(store) = &store {
                config.store = store.clone();
            }
        })
        .gateway_config(|config| config.body_timeout = BODY_TIMEOUT)
        .start(db)
        .await?;
    let api = system.api();
    Some(Setup { system, s3, api })
}

impl Setup {
    /// Every file the store holds (partial ones included).
    async fn stored_files(&self) -> Vec<String> {
        match &self.s3 {
            Some(server) => server.object_keys(BUCKET).await,
            None => files_under(&self.system.media_dir),
        }
    }

    /// What media counts against `user`'s quota.
    async fn used_bytes(&self, user: &Device) -> i64 {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.system.media_db_url).await.expect("media database");
        let row = sqlx::query("SELECT used_bytes FROM usage WHERE user_id = $1")
            .bind(&user.user_id)
            .fetch_optional(&pool)
            .await
            .expect("usage");
        pool.close().await;
        row.map_or(0, |row| row.get("used_bytes"))
    }

    /// Waits until the store holds exactly `count` files and `user` is counted `used` bytes.
    async fn wait_for_stored(&self, user: &Device, count: usize, used: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (files, counted) = (self.stored_files().await, self.used_bytes(user).await);
            if files.len() == count && counted == i64::try_from(used).unwrap() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "stored {files:?}, {counted} bytes counted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn upload(&self, device: &Device, name: &str, bytes: Vec<u8>) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/attachments", self.system.http(0)))
            .query(&[("name", name)])
            .bearer_auth(&device.access_token)
            .body(bytes)
            .send()
            .await
            .expect("gateway answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn download(&self, device: Option<&Device>, id: &str, range: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!("{}/v1/attachments/{id}/content", self.system.http(0)));
        if let Some(device) = device {
            request = request.bearer_auth(&device.access_token);
        }
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        request.send().await.expect("gateway answers")
    }

    /// Sends an upload's head and `body` over a raw connection, then `after`;
    /// returns the status line of the answer, if one came.
    async fn raw_upload(&self, device: &Device, length: &str, body: &[u8], after: After) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(self.system.gateway_addr(0)).await.expect("connects");
        let length = if length == "chunked" {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {length}")
        };
        let head = format!(
            "POST /v1/attachments?name=raw.pdf HTTP/1.1\r\nHost: chat\r\nAuthorization: Bearer {}\r\n{length}\r\n\r\n",
            device.access_token
        );
        stream.write_all(head.as_bytes()).await.expect("head sent");
        stream.write_all(body).await.expect("body sent");
        if matches!(after, After::Close) {
            stream.shutdown().await.expect("half-closed");
        }
        let mut answer = vec![0; 1024];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer)).await {
            Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&answer[..n]).lines().next().map(str::to_owned),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
enum After {
    /// Half-close the connection: the body ends short.
    Close,
    /// Keep the connection open and send nothing more.
    Wait,
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

/// A `width` × `height` picture in `format`.
fn picture(format: image::ImageFormat, width: u32, height: u32) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(pixels).write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

/// A JPEG photo whose EXIF (an APP1 segment after SOI) gives where it was taken.
fn photo_with_gps(width: u32, height: u32) -> Vec<u8> {
    let plain = picture(image::ImageFormat::Jpeg, width, height);
    let exif = b"Exif\0\0MM\0*GPSLatitude 52.5163 N GPSLongitude 13.3777 E";
    let length = u16::try_from(exif.len() + 2).unwrap().to_be_bytes();
    [&plain[..2], &[0xFF, 0xE1], &length, exif, &plain[2..]].concat()
}

/// A PDF of `size` bytes: its magic, then bytes no compressor would shrink.
fn pdf(size: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

on_both_databases!(
    with_media_down_files_wait_and_text_flows,
    a_removed_member_keeps_the_files_sent_before_and_gets_none_after,
    an_offline_member_is_told_a_photo_was_sent,
    photos_in_a_directory_lose_their_metadata_and_get_a_thumbnail,
    photos_in_s3_lose_their_metadata_and_get_a_thumbnail,
    files_in_a_directory_travel_with_their_message,
    files_in_s3_travel_with_their_message,
    a_file_in_a_directory_is_read_back_whole_or_by_range,
    a_file_in_s3_is_read_back_whole_or_by_range,
    bad_uploads_to_a_directory_leave_nothing,
    bad_uploads_to_s3_leave_nothing,
);

async fn photos_in_a_directory_lose_their_metadata_and_get_a_thumbnail(db: Db) {
    photos_lose_their_metadata(db, Where::Directory).await;
}

async fn photos_in_s3_lose_their_metadata_and_get_a_thumbnail(db: Db) {
    photos_lose_their_metadata(db, Where::S3).await;
}

async fn files_in_a_directory_travel_with_their_message(db: Db) {
    travel_with_their_message(db, Where::Directory).await;
}

async fn files_in_s3_travel_with_their_message(db: Db) {
    travel_with_their_message(db, Where::S3).await;
}

async fn a_file_in_a_directory_is_read_back_whole_or_by_range(db: Db) {
    read_back_whole_or_by_range(db, Where::Directory).await;
}

async fn a_file_in_s3_is_read_back_whole_or_by_range(db: Db) {
    read_back_whole_or_by_range(db, Where::S3).await;
}

async fn bad_uploads_to_a_directory_leave_nothing(db: Db) {
    bad_uploads_leave_nothing(db, Where::Directory).await;
}

async fn bad_uploads_to_s3_leave_nothing(db: Db) {
    bad_uploads_leave_nothing(db, Where::S3).await;
}

/// A 12 MiB PDF (three parts of an S3 multipart upload) goes up through the
/// gateway and comes back byte for byte, whole and in ranges, to its uploader only.
async fn read_back_whole_or_by_range(db: Db, on: Where) {
    let Some(setup) = start(db, on).await else { return };
    let api = &setup.api;
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let bytes = pdf(12 * 1024 * 1024);
    let size = bytes.len();

    let (status, stored) = setup.upload(&alice, "Q3 report.pdf", bytes.clone()).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["name"], "Q3 report.pdf");
    assert_eq!(stored["content_type"], "application/pdf", "the type comes from the bytes");
    assert_eq!(stored["size"], size);
    let id = stored["id"].as_str().expect("an id").to_owned();
    let (status, described) = api.get(&format!("/v1/attachments/{id}"), Some(&alice.access_token)).await;
    assert_eq!((status, &described), (200, &stored));
    setup.wait_for_stored(&alice, 1, size as u64).await;

    let whole = setup.download(Some(&alice), &id, None).await;
    assert_eq!(whole.status(), 200);
    let header = |response: &reqwest::Response, name: &str| {
        response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    assert_eq!(header(&whole, "content-type"), "application/pdf");
    assert_eq!(header(&whole, "content-length"), size.to_string());
    assert_eq!(header(&whole, "accept-ranges"), "bytes");
    assert_eq!(header(&whole, "x-content-type-options"), "nosniff");
    assert_eq!(header(&whole, "content-disposition"), "attachment; filename*=UTF-8''Q3%20report.pdf");
    assert!(whole.bytes().await.expect("the whole file") == bytes, "the file comes back byte for byte");

    let part = setup.download(Some(&alice), &id, Some("bytes=5242870-5242899")).await;
    assert_eq!(part.status(), 206, "a range across the first part's end");
    assert_eq!(header(&part, "content-range"), format!("bytes 5242870-5242899/{size}"));
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[5_242_870..5_242_900]);
    let tail = setup.download(Some(&alice), &id, Some("bytes=-10")).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &bytes[size - 10..]);
    let past = setup.download(Some(&alice), &id, Some(&format!("bytes={size}-"))).await;
    assert_eq!(past.status(), 416);
    assert_eq!(header(&past, "content-range"), format!("bytes */{size}"));

    // Nobody else, nothing without a token, nothing that is not an id.
    assert_eq!(setup.download(Some(&bob), &id, None).await.status(), 404);
    assert_eq!(api.get(&format!("/v1/attachments/{id}"), Some(&bob.access_token)).await.0, 404);
    assert_eq!(setup.download(None, &id, None).await.status(), 401);
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(setup.download(Some(&alice), &unknown, None).await.status(), 404);
    assert_eq!(setup.download(Some(&alice), "not-an-id", None).await.status(), 400);
    setup.system.stop().await;
}

/// Each bad upload gets a clear error, and in the end the store holds only
/// the one good file and the quota counts only its bytes.
async fn bad_uploads_leave_nothing(db: Db, on: Where) {
    let Some(setup) = start(db, on).await else { return };
    let alice = setup.api.new_user("alice").await;
    let refused = |(status, body): (u16, Value), expected: u16, why: &str| {
        assert_eq!(status, expected, "{why}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{why}: a message says why");
    };

    refused(setup.upload(&alice, "", pdf(100)).await, 400, "an empty name");
    refused(setup.upload(&alice, "../../etc/passwd", pdf(100)).await, 400, "a path");
    refused(setup.upload(&alice, "a\\b.pdf", pdf(100)).await, 400, "a Windows path");
    refused(setup.upload(&alice, "bell\u{7}.pdf", pdf(100)).await, 400, "a control character");
    refused(setup.upload(&alice, "nul\0.pdf", pdf(100)).await, 400, "a NUL byte");
    refused(setup.upload(&alice, &"x".repeat(300), pdf(100)).await, 400, "a name too long");
    refused(setup.upload(&alice, "empty.pdf", Vec::new()).await, 400, "an empty file");
    let elf = [b"\x7fELF\x02\x01\x01\0".as_slice(), &[0; 20_000]].concat();
    refused(setup.upload(&alice, "cat.jpg", elf).await, 400, "an executable named like a photo");
    let (status, body) = setup.upload(&alice, "cat.jpg", pdf(100)).await;
    assert_eq!((status, body["content_type"].as_str()), (201, Some("application/pdf")), "the name says nothing");
    let first = pdf(100).len() as u64;

    // Over the file limit, or over the quota: 413 from the declared length alone.
    // Lengths at their types' maximum: i64's is ours to refuse; u64's hyper
    // refuses while it parses the head, before any handler runs.
    let most = i64::MAX.to_string();
    assert_eq!(
        setup.raw_upload(&alice, &most, b"", After::Wait).await.as_deref(),
        Some("HTTP/1.1 413 Payload Too Large")
    );
    let beyond = u64::MAX.to_string();
    let refused_head = setup.raw_upload(&alice, &beyond, b"", After::Wait).await;
    assert_eq!(refused_head.as_deref(), Some("HTTP/1.1 431 Request Header Fields Too Large"));
    let over = (MAX_FILE + 1).to_string();
    assert_eq!(
        setup.raw_upload(&alice, &over, b"", After::Wait).await.as_deref(),
        Some("HTTP/1.1 413 Payload Too Large")
    );
    let (status, body) = setup.upload(&alice, "big.pdf", pdf(12 * 1024 * 1024)).await;
    assert_eq!(status, 201, "{body}");
    let stored = first + 12 * 1024 * 1024;
    let past_quota = (QUOTA - stored + 1).to_string();
    assert_eq!(
        setup.raw_upload(&alice, &past_quota, b"", After::Wait).await.as_deref(),
        Some("HTTP/1.1 413 Payload Too Large")
    );
    // No declared length.
    let chunked = setup.raw_upload(&alice, "chunked", b"5\r\n%PDF-\r\n0\r\n\r\n", After::Wait).await;
    assert_eq!(chunked.as_deref(), Some("HTTP/1.1 400 Bad Request"));
    // A body that stops arriving: 408 after the body timeout.
    let stalled = setup.raw_upload(&alice, "1000000", &pdf(50_000), After::Wait).await;
    assert_eq!(stalled.as_deref(), Some("HTTP/1.1 408 Request Timeout"));
    // A body cut short by the client going away.
    setup.raw_upload(&alice, "1000000", &pdf(300_000), After::Close).await;

    setup.wait_for_stored(&alice, 2, stored).await;
    setup.system.stop().await;
}

/// Alice sends a photo and a PDF in one message without a caption: Bob's
/// socket, a page, a catch-up and a search by file name all show them, Bob
/// may download them and Carol (no member) may not; the ids cannot be sent
/// again elsewhere or by someone else. An edit keeps them; the deletion takes
/// them, and the clean-up then removes the files and gives the quota back,
/// as it does for an upload no message carried.
async fn travel_with_their_message(db: Db, on: Where) {
    // Long enough for the uploads below to be sent, short enough to see go.
    let Some(setup) = start_with(db, on, Duration::from_secs(8)).await else { return };
    let (api, system) = (&setup.api, &setup.system);
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let bob_phone = api.login("bob").await;
    let carol = api.new_user("carol").await;
    let conversation = api.direct(&alice, &bob).await;
    let elsewhere = api.direct(&alice, &carol).await;

    let photo = picture(image::ImageFormat::Png, 40, 30);
    let (status, photo_up) = setup.upload(&alice, "beach.png", photo.clone()).await;
    assert_eq!(status, 201, "{photo_up}");
    let report = pdf(70_000);
    let (status, report_up) = setup.upload(&alice, "Q3 report.pdf", report.clone()).await;
    assert_eq!(status, 201, "{report_up}");
    let ids = [photo_up["id"].as_str().unwrap().to_owned(), report_up["id"].as_str().unwrap().to_owned()];
    let (_, phone_ready) = Ws::open(&system.ws(0), &bob_phone).await;
    let cursor = phone_ready["cursor"].as_str().unwrap().to_owned();
    let (mut bob_socket, _) = Ws::open(&system.ws(0), &bob).await;
    let (mut alice_socket, _) = Ws::open(&system.ws(0), &alice).await;

    alice_socket
        .send_json(serde_json::json!({
            "type": "send", "req": 1, "conversation_id": conversation, "client_msg_id": "files-1",
            "attachments": ids,
        }))
        .await;
    let ack = alice_socket.reply(1).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let check = |message: &Value, what: &str| {
        let attachments = message["attachments"].as_array().unwrap_or_else(|| panic!("{what}: {message}"));
        assert_eq!(attachments.len(), 2, "{what}: {message}");
        assert_eq!(attachments[0]["id"], ids[0].as_str(), "{what}: in the order sent");
        assert_eq!(attachments[0]["name"], "beach.png");
        assert_eq!(attachments[0]["content_type"], "image/png");
        assert_eq!(attachments[1]["name"], "Q3 report.pdf");
        assert_eq!(attachments[1]["size"], report.len());
        assert_eq!(attachments[1]["url"], format!("/v1/attachments/{}/content", ids[1]));
        assert_eq!(message["body"], "", "{what}: no caption");
    };
    check(&ack["message"], "the ack");
    let frame = bob_socket.expect("message").await;
    check(&frame["message"], "the live frame");
    let page = api.wait_for_history(&bob, &conversation, 1).await;
    check(&page[0], "the page");
    let (mut phone, _) = Ws::open(&format!("{}?cursor={cursor}", system.ws(0)), &bob_phone).await;
    let caught_up = phone.expect("message").await;
    check(&caught_up["message"], "the catch-up");
    let (status, found) = api.get("/v1/search?q=report", Some(&bob.access_token)).await;
    assert_eq!(status, 200, "{found}");
    check(&found["messages"][0], "a search by file name");

    // Bob reads the files through the message; Carol cannot.
    let whole = setup.download(Some(&bob), &ids[1], None).await;
    assert_eq!(whole.status(), 200);
    assert!(whole.bytes().await.unwrap() == report, "bob gets the PDF byte for byte");
    assert_eq!(setup.download(Some(&carol), &ids[1], None).await.status(), 404);
    assert_eq!(api.get(&format!("/v1/attachments/{}", ids[0]), Some(&bob.access_token)).await.0, 200);

    // The same files cannot go to another conversation, or be sent by Bob;
    // a retried send is the same message.
    let send = |client_msg_id: &str, attachments: Vec<String>| serde_json::json!({ "client_msg_id": client_msg_id, "body": "again", "attachments": attachments });
    let path = |c: &str| format!("/v1/conversations/{c}/messages");
    let (status, body) = api.post(&path(&elsewhere), Some(&alice.access_token), send("files-2", ids.to_vec())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, body) = api.post(&path(&conversation), Some(&bob.access_token), send("files-3", ids.to_vec())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let unknown = vec![uuid::Uuid::new_v4().to_string()];
    assert_eq!(api.post(&path(&conversation), Some(&alice.access_token), send("files-4", unknown)).await.0, 404);
    let not_ids = vec!["../etc/passwd".to_owned()];
    assert_eq!(api.post(&path(&conversation), Some(&alice.access_token), send("files-5", not_ids)).await.0, 400);
    let too_many = (0..11).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    assert_eq!(api.post(&path(&conversation), Some(&alice.access_token), send("files-6", too_many)).await.0, 400);
    let twice = vec![ids[0].clone(), ids[0].clone()];
    assert_eq!(api.post(&path(&conversation), Some(&alice.access_token), send("files-7", twice)).await.0, 400);
    let (status, none) = api
        .post(
            &path(&conversation),
            Some(&alice.access_token),
            serde_json::json!({ "client_msg_id": "files-8", "body": "" }),
        )
        .await;
    assert_eq!(status, 400, "an empty body needs files: {none}");
    let retried = serde_json::json!({ "client_msg_id": "files-1", "attachments": ids });
    let (status, same) = api.post(&path(&conversation), Some(&alice.access_token), retried).await;
    assert_eq!((status, &same["message_id"]), (200, &ack["message"]["message_id"]), "{same}");

    // An edit keeps the files; the deletion takes them.
    let message_id = ack["message"]["message_id"].as_str().unwrap().to_owned();
    let message_path = format!("/v1/conversations/{conversation}/messages/{message_id}");
    let (status, edited) = api
        .request(
            reqwest::Method::PATCH,
            &message_path,
            Some(&alice.access_token),
            Some(serde_json::json!({ "body": "from the beach" })),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["attachments"].as_array().map(Vec::len), Some(2), "{edited}");
    let (status, tombstone) =
        api.request(reqwest::Method::DELETE, &message_path, Some(&alice.access_token), None).await;
    assert_eq!(status, 200, "{tombstone}");
    let deleted = loop {
        let page = api.wait_for_history(&bob, &conversation, 1).await;
        if page[0]["deleted_at"].is_string() {
            break page[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(deleted.get("attachments").is_none(), "a tombstone carries no file: {deleted}");
    assert_eq!(setup.download(Some(&bob), &ids[1], None).await.status(), 404, "nothing carries it for bob now");

    // An upload no message carries, beside them: all go, and the quota with them.
    let (status, _) = setup.upload(&alice, "never sent.pdf", pdf(1000)).await;
    assert_eq!(status, 201);
    setup.wait_for_stored(&alice, 0, 0).await;
    assert_eq!(setup.download(Some(&alice), &ids[0], None).await.status(), 404);
    drop((bob_socket, alice_socket, phone));
    setup.system.stop().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A photo with GPS in its EXIF is kept without it (and counted at its new
/// size), with its dimensions, a thumbnail and a placeholder. A
/// decompression bomb, a damaged image and an image over its limit are
/// refused, and leave nothing.
async fn photos_lose_their_metadata(db: Db, on: Where) {
    let Some(setup) = start(db, on).await else { return };
    let alice = setup.api.new_user("alice").await;
    let photo = photo_with_gps(1200, 900);
    let (status, up) = setup.upload(&alice, "beach.jpg", photo.clone()).await;
    assert_eq!(status, 201, "{up}");
    assert_eq!(
        (up["content_type"].as_str(), up["width"].as_u64(), up["height"].as_u64()),
        (Some("image/jpeg"), Some(1200), Some(900))
    );
    assert!(up["blurhash"].as_str().is_some_and(|b| b.len() >= 6), "{up}");
    let id = up["id"].as_str().unwrap().to_owned();
    assert_eq!(up["thumbnail_url"], format!("/v1/attachments/{id}/thumbnail"));
    let size = up["size"].as_u64().unwrap();
    assert!(size < photo.len() as u64, "the EXIF went: {size} of {}", photo.len());

    let kept = setup.download(Some(&alice), &id, None).await.bytes().await.unwrap();
    assert_eq!(kept.len() as u64, size);
    assert!(!contains(&kept, b"GPS") && !contains(&kept, b"Exif"), "no metadata is served");
    let decoded = image::load_from_memory(&kept).expect("still a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (1200, 900));
    let thumbnail = reqwest::Client::new()
        .get(format!("{}/v1/attachments/{id}/thumbnail", setup.system.http(0)))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), 200);
    assert_eq!(thumbnail.headers()["content-type"], "image/jpeg");
    let small = image::load_from_memory(&thumbnail.bytes().await.unwrap()).expect("a JPEG thumbnail");
    assert_eq!((small.width(), small.height()), (320, 240));

    // A JPEG whose header claims 60,000 × 60,000 pixels (3.6 gigapixels).
    let mut bomb = picture(image::ImageFormat::Jpeg, 64, 64);
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline frame header");
    bomb[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let (status, body) = setup.upload(&alice, "bomb.jpg", bomb).await;
    assert_eq!(status, 400, "a decompression bomb: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("60000×60000"), "{body}");
    let damaged = picture(image::ImageFormat::Png, 300, 300);
    let (status, body) = setup.upload(&alice, "cut.png", damaged[..damaged.len() / 2].to_vec()).await;
    assert_eq!(status, 400, "a damaged image: {body}");
    let large = [&picture(image::ImageFormat::Png, 8, 8)[..], &vec![0; MAX_IMAGE as usize]].concat();
    let (status, body) = setup.upload(&alice, "large.png", large).await;
    assert_eq!(status, 413, "an image over the image limit: {body}");
    let (status, pdf_up) = setup.upload(&alice, "notes.pdf", pdf(3000)).await;
    assert_eq!(status, 201);
    assert!(pdf_up.get("thumbnail_url").is_none(), "a PDF gets no thumbnail: {pdf_up}");
    let no_thumbnail = reqwest::Client::new()
        .get(format!("{}/v1/attachments/{}/thumbnail", setup.system.http(0), pdf_up["id"].as_str().unwrap()))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(no_thumbnail.status(), 404);

    // The photo, its thumbnail and the PDF; the quota counts what is kept.
    setup.wait_for_stored(&alice, 3, size + 3000).await;
    setup.system.stop().await;
}

/// Bob is offline with a webhook: a photo without a caption is announced as
/// "sent a photo", a PDF with one as "sent a file: <caption>".
async fn an_offline_member_is_told_a_photo_was_sent(db: Db) {
    let Some(setup) = start(db, Where::Directory).await else { return };
    let api = &setup.api;
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let endpoint = chat_system_tests::push::PushEndpoint::start().await;
    let body = serde_json::json!({ "type": "webhook", "url": endpoint.url("hook") });
    let (status, hook) = api.post("/v1/push/subscriptions", Some(&bob.access_token), body).await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["webhook_secret"].as_str().unwrap();

    let path = format!("/v1/conversations/{conversation}/messages");
    for (i, (name, bytes, caption, told)) in [
        ("beach.png", picture(image::ImageFormat::Png, 40, 30), None, "sent a photo"),
        ("notes.pdf", pdf(2000), Some("the notes"), "sent a file: the notes"),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, up) = setup.upload(&alice, name, bytes).await;
        assert_eq!(status, 201, "{up}");
        let mut message = serde_json::json!({ "client_msg_id": format!("p{i}"), "attachments": [up["id"]] });
        if let Some(caption) = caption {
            message["body"] = caption.into();
        }
        let (status, sent) = api.post(&path, Some(&alice.access_token), message).await;
        assert_eq!(status, 201, "{sent}");
        let hooked = endpoint.wait_for("hook", i + 1).await;
        let told_bob = chat_system_tests::push::verify_webhook(&hooked[i], secret);
        assert_eq!(told_bob["body"], told, "{told_bob}");
    }
    setup.system.stop().await;
}

/// Files are readable as their messages are: Bob, removed from a group,
/// still reads the file sent before his removal (as he reads that message)
/// and not the one sent after. A forged token reads nothing.
async fn a_removed_member_keeps_the_files_sent_before_and_gets_none_after(db: Db) {
    let Some(setup) = start(db, Where::Directory).await else { return };
    let api = &setup.api;
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let group = serde_json::json!({ "kind": "group", "title": "team", "members": [bob.user_id, carol.user_id] });
    let (status, created) = api.post("/v1/conversations", Some(&alice.access_token), group).await;
    assert_eq!(status, 201, "{created}");
    let group = created["conversation_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/conversations/{group}/messages");
    let send_file = async |name: &str| {
        let (status, up) = setup.upload(&alice, name, pdf(1500)).await;
        assert_eq!(status, 201, "{up}");
        let message = serde_json::json!({ "client_msg_id": name, "attachments": [up["id"]] });
        let (status, sent) = api.post(&path, Some(&alice.access_token), message).await;
        assert_eq!(status, 201, "{sent}");
        up["id"].as_str().unwrap().to_owned()
    };
    let before = send_file("before.pdf").await;
    let remove = format!("/v1/conversations/{group}/members/{}", bob.user_id);
    let (status, body) = api.request(reqwest::Method::DELETE, &remove, Some(&alice.access_token), None).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let after = send_file("after.pdf").await;

    assert_eq!(setup.download(Some(&bob), &before, None).await.status(), 200, "sent while bob was a member");
    assert_eq!(setup.download(Some(&bob), &after, None).await.status(), 404, "sent after his removal");
    assert_eq!(setup.download(Some(&carol), &after, None).await.status(), 200, "carol is still a member");
    let forged = Device { access_token: format!("{}x", alice.access_token), ..alice.clone() };
    assert_eq!(setup.download(Some(&forged), &before, None).await.status(), 401, "a forged token");
    setup.system.stop().await;
}

/// Media is down: an upload and a send with files answer 503 and leave
/// nothing (no message, no half-sent files); text still flows. Media back,
/// the same send goes through with its files.
async fn with_media_down_files_wait_and_text_flows(db: Db) {
    let Some(mut setup) = start(db, Where::Directory).await else { return };
    let alice = setup.api.new_user("alice").await;
    let bob = setup.api.new_user("bob").await;
    let conversation = setup.api.direct(&alice, &bob).await;
    let (status, up) = setup.upload(&alice, "notes.pdf", pdf(2000)).await;
    assert_eq!(status, 201, "{up}");
    let path = format!("/v1/conversations/{conversation}/messages");
    let with_file = serde_json::json!({ "client_msg_id": "with-file", "attachments": [up["id"]] });

    setup.system.kill_media().await;
    let (status, body) = setup.upload(&alice, "more.pdf", pdf(2000)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    let (status, body) = setup.api.post(&path, Some(&alice.access_token), with_file.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    let text = serde_json::json!({ "client_msg_id": "text", "body": "the file is coming" });
    assert_eq!(setup.api.post(&path, Some(&alice.access_token), text).await.0, 201, "text does not wait for media");
    let page = setup.api.wait_for_history(&bob, &conversation, 1).await;
    assert_eq!(page.len(), 1, "the refused send left no message: {page:?}");

    setup.system.start_media().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let sent = loop {
        let (status, body) = setup.api.post(&path, Some(&alice.access_token), with_file.clone()).await;
        if status == 201 {
            break body;
        }
        assert!(status == 503 && tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sent["attachments"][0]["id"], up["id"], "{sent}");
    let page = setup.api.wait_for_history(&bob, &conversation, 2).await;
    assert_eq!(page[1]["attachments"][0]["name"], "notes.pdf");
    setup.system.stop().await;
}
