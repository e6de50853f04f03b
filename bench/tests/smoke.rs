//! The load tool runs every scenario end to end at a tiny size against the
//! real services (debug builds, as `cargo build --bins` leaves them). Only
//! that it works is checked: the suite makes no timing assertions.

#[test]
fn every_scenario_runs_at_a_tiny_size() {
    let out = tempfile::tempdir().expect("temp dir");
    let results = out.path().join("results.md");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["all", "--quick", "--out"])
        .arg(&results)
        .current_dir(out.path())
        .status()
        .expect("chat-bench runs");
    assert!(status.success(), "chat-bench all --quick failed: {status}");
    let report = std::fs::read_to_string(&results).expect("results written");
    for section in [
        "Floor",
        "CPU time per message",
        "End-to-end latency",
        "Maximum sustainable rate",
        "Group fan-out",
        "Catch-up",
        "Idle connections",
        "Connect and authenticate",
        "Connect cost against the user's conversations",
        "Paging (50 messages) and search",
        "History ingest",
    ] {
        assert!(report.contains(section), "no {section} section in:\n{report}");
    }
}

/// What scripts/bench-instructions runs under callgrind: one SQLite ingest.
#[test]
fn one_ingest_runs_for_the_instruction_count() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["ingest-once", "50"])
        .output()
        .expect("chat-bench runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "chat-bench ingest-once failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.starts_with("stored 50 messages"), "unexpected output: {printed}");
}
