//! An unknown username and a wrong password must be indistinguishable to a
//! client: the same status, the same body, the same time. Timing is only
//! meaningful on a quiet machine, so this binary holds one test (cargo runs
//! test binaries one after another) and measures SQLite, then PostgreSQL.

use std::time::{Duration, Instant};

use chat_system_tests::{Db, System};
use serde_json::json;

const ROUNDS: usize = 15;

async fn median_times(db: Db) -> Option<(Duration, Duration)> {
    let system = System::builder()
        .auth_config(|c| {
            c.login_failures_per_username = "1000/1".parse().expect("rate");
            c.login_per_address = "1000/1".parse().expect("rate");
        })
        .start(db)
        .await?;
    let api = system.api();
    api.new_user("alice").await;
    let attempt = |username: String| {
        let api = system.api();
        async move {
            let started = Instant::now();
            let body = json!({ "username": username, "password": "wrong horse battery" });
            let (status, answer) = api.post("/v1/auth/login", None, body).await;
            (status, answer, started.elapsed())
        }
    };
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so a warm-up or a neighbour's burst favours neither.
        let (a, b) = if round % 2 == 0 {
            (attempt(format!("nobody{round}")).await, attempt("alice".into()).await)
        } else {
            let b = attempt("alice".into()).await;
            (attempt(format!("nobody{round}")).await, b)
        };
        assert_eq!((a.0, b.0), (401, 401));
        assert_eq!(a.1, b.1, "the same answer for an unknown user and a wrong password");
        unknown.push(a.2);
        wrong.push(b.2);
    }
    system.stop().await;
    unknown.sort();
    wrong.sort();
    Some((unknown[ROUNDS / 2], wrong[ROUNDS / 2]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_take_the_same_time() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some((unknown, wrong)) = median_times(db).await else { continue };
        let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
        eprintln!("{db:?}: median unknown user {unknown:?}, wrong password {wrong:?} (ratio {ratio:.2})");
        assert!((0.7..1.4).contains(&ratio), "{db:?}: median unknown user {unknown:?} vs wrong password {wrong:?}");
    }
}
