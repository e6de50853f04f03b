//! argon2id password hashing with bounded memory. A dummy hash is verified for
//! unknown users so a login takes the same time whether or not the username
//! exists.
//!
//! Each hash needs 19 MiB of working memory. Run on tokio's blocking pool,
//! a burst made as many hashes at once as there were requests in flight, and
//! glibc kept each thread's freed 19 MiB in that thread's arena: auth grew to
//! gigabytes and stayed there. So hashing runs on a fixed set of threads
//! (`AUTH_HASH_CONCURRENCY`), each owning one working memory it reuses for
//! every hash, allocated once and never freed. At most `AUTH_HASH_QUEUE`
//! more requests wait their turn; beyond that a request is refused at once
//! with [`Error::Busy`] (429 with `Retry-After` at the gateway). Auth's
//! hashing memory is therefore at most `concurrency` × 19 MiB, whatever the
//! burst.

use std::sync::{Arc, Mutex, mpsc};

use anyhow::Context;
use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::Error;

/// OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// One hash or verification, run on a hashing thread with that thread's memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    dummy_hash: Arc<str>,
    jobs: mpsc::Sender<Job>,
    /// Hashing threads plus queue places; a job holds one until it is done.
    admission: Arc<Semaphore>,
}

impl Hasher {
    /// Starts `concurrency` hashing threads (at least one) that take jobs
    /// from a queue of at most `queue` more.
    ///
    /// # Errors
    /// When the parameters are invalid or a thread cannot be started.
    pub async fn new(concurrency: usize, queue: usize) -> Result<Self, Error> {
        // argon2's error is not a std::error::Error: its message is all there is.
        let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
            .map_err(|e| Error::Unexpected(anyhow::anyhow!("argon2 params: {e}")))?;
        let concurrency = concurrency.max(1);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..concurrency {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || work(&receiver))
                .context("cannot start a hashing thread")?;
        }
        let admission = Arc::new(Semaphore::new(concurrency + queue));
        let mut hasher = Self { params, dummy_hash: Arc::from(""), jobs, admission };
        hasher.dummy_hash = Arc::from(hasher.hash("not a real password".to_owned()).await?);
        Ok(hasher)
    }

    /// Runs `job` on a hashing thread, or refuses at once when every thread
    /// and queue place is taken.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Vec<Block>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let permit: OwnedSemaphorePermit = self.admission.clone().try_acquire_owned().map_err(|_| {
            crate::metrics::get().hashes_refused.inc();
            Error::Busy
        })?;
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // A caller that gave up while queued no longer needs the work.
            let result = (!reply.is_closed()).then(|| job(memory));
            // The place is free before the caller hears back, so its next
            // hash (or the next caller's) is not refused by a place still held.
            drop(permit);
            if let Some(result) = result {
                let _ = reply.send(result);
            }
        });
        self.jobs.send(job).map_err(|_| Error::Unexpected(anyhow::anyhow!("the hashing threads have stopped")))?;
        answer.await.map_err(|_| Error::Unexpected(anyhow::anyhow!("a hashing thread stopped mid-job")))?
    }

    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let params = self.params.clone();
        self.run(move |memory| {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
            let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
            let output = compute(&argon2, &params, password.as_bytes(), &salt.as_salt(), len, memory)?;
            let hash = PasswordHash {
                algorithm: argon2::ARGON2ID_IDENT,
                version: Some(Version::V0x13.into()),
                params: (&params).try_into().map_err(unexpected)?,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            };
            Ok(hash.to_string())
        })
        .await
    }

    /// Verifies against `stored`, or against the dummy hash when the user is unknown.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Error> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        self.run(move |memory| {
            let parsed = PasswordHash::new(&stored).map_err(unexpected)?;
            let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
                return Err(Error::Unexpected(anyhow::anyhow!("stored hash has no salt or output")));
            };
            let algorithm = Algorithm::try_from(parsed.algorithm).map_err(unexpected)?;
            let version = parsed.version.map(Version::try_from).transpose().map_err(unexpected)?.unwrap_or_default();
            let params = Params::try_from(&parsed).map_err(unexpected)?;
            let argon2 = Argon2::new(algorithm, version, params.clone());
            let output = compute(&argon2, &params, password.as_bytes(), &salt, expected.len(), memory)?;
            // `Output`'s equality is constant-time.
            Ok(known && output == expected)
        })
        .await
    }
}

/// Takes jobs until every `Hasher` is gone, with one working memory for all.
fn work(receiver: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory = Vec::new();
    loop {
        let next = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match next {
            Ok(job) => job(&mut memory),
            Err(mpsc::RecvError) => return,
        }
    }
}

/// argon2 of `password` into an output of `len` bytes, in `memory` (grown
/// once to what `params` needs, then reused).
fn compute(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &argon2::password_hash::Salt<'_>,
    len: usize,
    memory: &mut Vec<Block>,
) -> Result<Output, Error> {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes).map_err(unexpected)?;
    Output::init_with(len, |out| {
        argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..]).map_err(Into::into)
    })
    .map_err(unexpected)
}

fn unexpected(e: impl std::fmt::Display) -> Error {
    Error::Unexpected(anyhow::anyhow!("argon2: {e}"))
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password_and_reads_as_standard_argon2id() {
        let hasher = Hasher::new(1, 4).await.expect("hasher");
        let hash = hasher.hash("correct horse".to_owned()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(hasher.verify("correct horse".to_owned(), Some(hash.clone())).await.expect("verify"));
        assert!(!hasher.verify("wrong horse".to_owned(), Some(hash.clone())).await.expect("verify"));
        let parsed = PasswordHash::new(&hash).expect("PHC string");
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
    }

    #[tokio::test]
    async fn hashes_stored_before_the_hashing_threads_still_verify() {
        let hasher = Hasher::new(1, 4).await.expect("hasher");
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x13, hasher.params.clone())
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        assert!(hasher.verify("correct horse".to_owned(), Some(old)).await.expect("verify"));
    }

    #[tokio::test]
    async fn with_every_thread_and_queue_place_taken_a_hash_is_refused_at_once() {
        let hasher = Hasher::new(1, 1).await.expect("hasher");
        let taken = hasher.admission.clone().try_acquire_many_owned(2).expect("both places");
        assert!(matches!(hasher.hash("correct horse".to_owned()).await, Err(Error::Busy)));
        assert!(matches!(hasher.verify("correct horse".to_owned(), None).await, Err(Error::Busy)));
        drop(taken);
        assert!(hasher.hash("correct horse".to_owned()).await.is_ok(), "a place freed is usable again");
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let hasher = Hasher::new(1, 4).await.expect("hasher");
        assert!(!hasher.verify("not a real password".to_owned(), None).await.expect("verify"));
    }
}
