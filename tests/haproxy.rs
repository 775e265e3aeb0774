//! Issue 12, part 6: scale-out behind Debian's HAProxy, by the script the
//! deployment guide shows (`contrib/haproxy/scale-out.sh`): three echo
//! instances behind `send-proxy-v2` with health checks on `/ready`,
//! `evloop bench echo` through HAProxy while one instance is killed (HAProxy
//! routes around it, no byte is corrupted, only the killed instance's
//! connections end), and the log service logging the client's own ip:port.
//!
//! Skipped where haproxy is missing, unless `EVLOOP_REQUIRE_HAPROXY=1` (as
//! in `.ci/run`).

mod common;

use std::process::Command;

#[test]
fn haproxy_routes_around_a_killed_instance_and_passes_the_client_address() {
    if !common::installed("haproxy") {
        assert!(
            std::env::var_os("EVLOOP_REQUIRE_HAPROXY").is_none(),
            "haproxy is missing (Debian package haproxy)"
        );
        eprintln!("skipped: haproxy is missing (Debian package haproxy)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/haproxy/scale-out.sh");
    let output = Command::new("timeout")
        .args([
            "--kill-after=5",
            "120",
            "bash",
            script,
            env!("CARGO_BIN_EXE_evloop"),
        ])
        .env_remove("EVLOOP_IO")
        .output()
        .expect("run the script");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the script failed");
    assert!(report.lines().any(|line| line == "PASSED"), "{report}");
}
