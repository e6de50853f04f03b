//! Attachments: one 100 MiB upload and its download through the gateway and
//! media, against the floor of the same bytes written to and read from a
//! file on the same disk; then 20 clients uploading 100 MiB each at once,
//! with the highest resident memory of media and the gateway above where
//! they were before (the upload path streams: it should stay flat).

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use chat_system_tests::client::Device;
use futures::StreamExt;

use crate::setup::{Bench, Spent};

/// Bytes in a chunk the client sends (and the floor writes).
const CHUNK: usize = 1024 * 1024;

pub struct Throughput {
    pub floor_write: f64,
    pub floor_read: f64,
    pub upload: f64,
    pub download: f64,
    /// CPU each process spent per MiB uploaded, then downloaded.
    pub upload_spent: Spent,
    pub download_spent: Spent,
}

pub struct Crowd {
    pub seconds: f64,
    pub media_peak_bytes: u64,
    pub gateway_peak_bytes: u64,
}

/// Bytes no compressor would shrink, starting like a PDF.
fn chunks(mib: usize) -> Vec<Bytes> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut random = vec![0u8; CHUNK];
    for word in random.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
    let mut first = random.clone();
    first[..9].copy_from_slice(b"%PDF-1.7\n");
    let rest = Bytes::from(random);
    std::iter::once(Bytes::from(first)).chain(std::iter::repeat_n(rest, mib.saturating_sub(1))).collect()
}

fn mib_per_second(mib: usize, seconds: f64) -> f64 {
    mib as f64 / seconds
}

/// Writes `mib` MiB to a file beside media's store (no sync, as media's
/// store does not sync either), then reads it back.
fn floor(dir: &std::path::Path, mib: usize) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("floor.bin");
    let data = chunks(mib);
    let started = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    for chunk in &data {
        file.write_all(chunk)?;
    }
    drop(file);
    let write = mib_per_second(mib, started.elapsed().as_secs_f64());
    let started = Instant::now();
    let mut file = std::fs::File::open(&path)?;
    let mut buffer = vec![0; CHUNK];
    while file.read(&mut buffer)? > 0 {}
    let read = mib_per_second(mib, started.elapsed().as_secs_f64());
    std::fs::remove_file(&path)?;
    Ok((write, read))
}

async fn upload(bench: &Bench, http: &reqwest::Client, device: &Device, mib: usize) -> anyhow::Result<String> {
    let data = chunks(mib);
    let length: usize = data.iter().map(Bytes::len).sum();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(data.into_iter().map(Ok::<_, std::io::Error>)));
    let response = http
        .post(format!("{}/v1/attachments?name=bench.pdf", bench.api.base()))
        .bearer_auth(&device.access_token)
        .header(reqwest::header::CONTENT_LENGTH, length)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await?;
    ensure!(status == 201, "upload answered {status}: {answer}");
    Ok(answer["id"].as_str().context("an attachment id")?.to_owned())
}

async fn download(bench: &Bench, http: &reqwest::Client, device: &Device, id: &str) -> anyhow::Result<u64> {
    let response = http
        .get(format!("{}/v1/attachments/{id}/content", bench.api.base()))
        .bearer_auth(&device.access_token)
        .send()
        .await?
        .error_for_status()?;
    let mut received = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        received += chunk?.len() as u64;
    }
    Ok(received)
}

pub async fn throughput(bench: &Bench, dir: &std::path::Path, mib: usize) -> anyhow::Result<Throughput> {
    let (floor_write, floor_read) = floor(dir, mib)?;
    let device = bench.users("media", 1).await.remove(0);
    let http = reqwest::Client::new();
    let before = bench.meter().await;
    let started = Instant::now();
    let id = upload(bench, &http, &device, mib).await?;
    let upload_rate = mib_per_second(mib, started.elapsed().as_secs_f64());
    let upload_spent = bench.spent_since(before).await;
    let before = bench.meter().await;
    let started = Instant::now();
    let received = download(bench, &http, &device, &id).await?;
    let download_rate = mib_per_second(mib, started.elapsed().as_secs_f64());
    let download_spent = bench.spent_since(before).await;
    ensure!(received == (mib * CHUNK) as u64, "downloaded {received} bytes of {}", mib * CHUNK);
    Ok(Throughput {
        floor_write,
        floor_read,
        upload: upload_rate,
        download: download_rate,
        upload_spent,
        download_spent,
    })
}

/// `clients` users upload `mib` MiB each at once.
pub async fn crowd(bench: &Bench, clients: usize, mib: usize) -> anyhow::Result<Crowd> {
    let devices = bench.users("crowd", clients).await;
    let pids =
        [bench.system.media.pid().context("media's pid")?, bench.system.gateway.pid().context("the gateway's pid")?];
    let base = [crate::setup::resident_bytes(pids[0])?, crate::setup::resident_bytes(pids[1])?];
    let peaks = Arc::new([AtomicU64::new(base[0]), AtomicU64::new(base[1])]);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peaks, done) = (peaks.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                for (pid, peak) in pids.iter().zip(peaks.iter()) {
                    if let Ok(bytes) = crate::setup::resident_bytes(*pid) {
                        peak.fetch_max(bytes, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    let uploads = devices.iter().map(|device| upload(bench, &http, device, mib));
    let results = futures::future::join_all(uploads).await;
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    for result in results {
        result?;
    }
    Ok(Crowd {
        seconds,
        media_peak_bytes: peaks[0].load(Ordering::Relaxed).saturating_sub(base[0]),
        gateway_peak_bytes: peaks[1].load(Ordering::Relaxed).saturating_sub(base[1]),
    })
}
