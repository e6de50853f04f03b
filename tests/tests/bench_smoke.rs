//! The bench tool itself: `chat-bench all --quick` runs every scenario at a
//! tiny size against a system of its own and writes a report with every
//! section. No figure is checked (speed is the bench's business, shown in
//! BENCHMARKS.md, not the suite's); that the bench still runs end to end is.

use std::process::Command;

#[test]
fn every_bench_scenario_runs_at_a_tiny_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("results.md");
    let status = Command::new(chat_system_tests::service_binary("chat-bench"))
        .args(["all", "--quick", "--out"])
        .arg(&out)
        .status()
        .expect("chat-bench starts");
    assert!(status.success(), "chat-bench all --quick failed: {status}");
    let report = std::fs::read_to_string(&out).expect("the report is written");
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
        assert!(report.contains(section), "no {section:?} section in:\n{report}");
    }
}
