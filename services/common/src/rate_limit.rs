//! Token-bucket rate limits, in memory: a brake on abuse (password guessing,
//! floods of frames), not an accounting record. `Limiter` keeps one bucket per
//! key (a username, a client address); `Bucket` is a single one (a socket's).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many tracked keys, full buckets are forgotten.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Attempts allowed in a burst.
    pub burst: u32,
    /// One attempt comes back after this long.
    pub refill: Duration,
}

/// One bucket, for a single caller.
#[derive(Debug)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn new(rate: Rate) -> Self {
        Self { rate, tokens: f64::from(rate.burst), updated: Instant::now() }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        refill(self.rate, &mut self.tokens, &mut self.updated, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(wait_for_one(self.rate, self.tokens))
        }
    }
}

fn refill(rate: Rate, tokens: &mut f64, updated: &mut Instant, now: Instant) {
    let per_sec = 1.0 / rate.refill.as_secs_f64().max(0.001);
    let gained = now.duration_since(*updated).as_secs_f64() * per_sec;
    *tokens = (*tokens + gained).min(f64::from(rate.burst));
    *updated = now;
}

fn wait_for_one(rate: Rate, tokens: f64) -> Duration {
    Duration::from_secs_f64((1.0 - tokens).max(0.0) * rate.refill.as_secs_f64())
}

/// A bucket per key.
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self { rate, buckets: Mutex::new(HashMap::new()) }
    }

    fn refilled(&self, bucket: &mut Bucket, now: Instant) {
        refill(self.rate, &mut bucket.tokens, &mut bucket.updated, now);
    }

    fn wait_for_one(&self, bucket: &Bucket) -> Duration {
        wait_for_one(self.rate, bucket.tokens)
    }

    fn with_bucket<T>(&self, key: &str, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let burst = f64::from(self.rate.burst);
            buckets.retain(|_, b| {
                self.refilled(b, now);
                b.tokens < burst
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert_with(|| Bucket::new(self.rate));
        self.refilled(bucket, now);
        f(bucket)
    }

    /// Takes one attempt, or says how long to wait for one.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.with_bucket(key, |bucket| {
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                Ok(())
            } else {
                Err(self.wait_for_one(bucket))
            }
        })
    }

    /// Whether an attempt is available, without taking it.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.with_bucket(key, |bucket| if bucket.tokens >= 1.0 { Ok(()) } else { Err(self.wait_for_one(bucket)) })
    }
}

/// `"<burst>/<refill seconds>"`, e.g. `5/30`: five attempts, one more every 30 s.
impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (burst, refill) = s.split_once('/').ok_or("expected <burst>/<refill seconds>")?;
        let burst: u32 = burst.trim().parse().map_err(|_| "burst must be a whole number")?;
        let refill: f64 = refill.trim().parse().map_err(|_| "refill must be a number of seconds")?;
        if burst == 0 || !(refill > 0.0 && refill.is_finite()) {
            return Err("burst and refill must be positive".into());
        }
        Ok(Self { burst, refill: Duration::from_secs_f64(refill) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_then_refills() {
        let limiter = Limiter::new(Rate { burst: 2, refill: Duration::from_millis(50) });
        assert!(limiter.take("k").is_ok());
        assert!(limiter.take("k").is_ok());
        let wait = limiter.take("k").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(50));
        assert!(limiter.take("other").is_ok(), "keys are independent");
        std::thread::sleep(Duration::from_millis(60));
        assert!(limiter.check("k").is_ok());
        assert!(limiter.take("k").is_ok());
    }

    #[test]
    fn a_single_bucket_limits_a_burst() {
        let mut bucket = Bucket::new(Rate { burst: 3, refill: Duration::from_secs(10) });
        assert!((0..3).all(|_| bucket.take().is_ok()));
        assert!(bucket.take().is_err());
    }

    #[test]
    fn rates_parse_from_configuration() {
        let rate: Rate = "5/30".parse().unwrap();
        assert_eq!((rate.burst, rate.refill), (5, Duration::from_secs(30)));
        assert!("5".parse::<Rate>().is_err());
        assert!("0/1".parse::<Rate>().is_err());
        assert!("3/-1".parse::<Rate>().is_err());
    }
}
