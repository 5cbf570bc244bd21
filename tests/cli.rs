#![cfg(feature = "cli")]
//! The binary as a user runs it: flags and exit codes, logs on stdout, and the signals that stop
//! it (the first one gracefully, a second one at once).
//!
//! Every process is spawned through `common::binary::netgrace`, which puts `-l 127.0.0.1:0`
//! first, and is owned by a `Process` that kills it on drop, so a failing test never leaves a
//! server behind.

mod common;

use std::io::Read;
use std::net::TcpListener;

use common::assert_echo;
use common::binary::{assert_report, report, run, Serving};

/// Asserts a usage error: exit 2, nothing on stdout, then on stderr one `netgrace: ` line that
/// contains every string in `names`, followed by the usage line.
#[track_caller]
fn assert_usage_error(args: &[&str], names: &[&str]) {
    let run = run(args);
    let stderr = &run.stderr;
    assert_eq!(run.status.code(), Some(2), "{args:?}: stderr:\n{stderr}");
    assert_eq!(run.stdout, "", "{args:?}: stdout should be empty");
    assert!(!stderr.contains("panicked"), "{args:?}: stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 2,
        "{args:?}: expected an error line, then usage; stderr:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("netgrace: "),
        "{args:?}: error line: {}",
        lines[0]
    );
    for name in names {
        assert!(
            lines[0].contains(name),
            "{args:?}: the error line should name {name:?}: {}",
            lines[0]
        );
    }
    assert!(
        lines[1].starts_with("usage: netgrace"),
        "{args:?}: the error should be one line, then usage; stderr:\n{stderr}"
    );
}

/// Runs netgrace with the single argument `flag`, asserts that it exits 0 with nothing on
/// stderr, and returns its stdout.
#[track_caller]
fn stdout_of_quiet_success(flag: &str) -> String {
    let run = run(&[flag]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{flag}: stderr:\n{}",
        run.stderr
    );
    assert_eq!(run.stderr, "", "{flag}: stderr should be empty");
    run.stdout
}

#[test]
fn unknown_flag_exits_2_naming_it_then_usage() {
    assert_usage_error(&["--bogus"], &["'--bogus'"]);
    assert_usage_error(&["-x"], &["'-x'"]);
}

#[test]
fn non_numeric_max_connections_exits_2_naming_option_and_value() {
    assert_usage_error(&["--max-connections", "x"], &["--max-connections", "'x'"]);
}

#[test]
fn zero_max_connections_exits_2_naming_the_option() {
    assert_usage_error(&["--max-connections", "0"], &["--max-connections"]);
}

#[test]
fn zero_max_buffer_exits_2_naming_the_option() {
    assert_usage_error(&["--max-buffer", "0"], &["--max-buffer"]);
}

#[test]
fn negative_drain_timeout_exits_2_naming_option_and_value() {
    assert_usage_error(&["--drain-timeout", "-1"], &["--drain-timeout", "'-1'"]);
}

#[test]
fn bad_idle_timeout_exits_2_naming_option_and_value() {
    assert_usage_error(&["--idle-timeout", "soon"], &["--idle-timeout", "'soon'"]);
    assert_usage_error(&["--idle-timeout", "-1"], &["--idle-timeout", "'-1'"]);
}

/// Silent clients are closed after 300 s by default; `never` and `0` turn it off. The
/// binary says which at startup.
#[test]
fn idle_timeout_defaults_to_300_s_and_never_or_0_turns_it_off() {
    for (args, expected) in [
        (&[][..], "idle timeout 300 s"),
        (&["--idle-timeout", "never"][..], "idle timeout off"),
        (&["--idle-timeout", "0"][..], "idle timeout off"),
        (&["--idle-timeout", "2.5"][..], "idle timeout 2.5 s"),
    ] {
        let serving = Serving::start(args);
        assert_eq!(
            serving.count_in_log(expected),
            1,
            "{args:?}: {:?}",
            serving.log
        );
        serving.signal("TERM");
        serving.wait_for_exit_0();
    }
}

#[test]
fn bad_restart_timeout_exits_2_naming_option_and_value() {
    assert_usage_error(
        &["--restart-timeout", "soon"],
        &["--restart-timeout", "'soon'"],
    );
    assert_usage_error(&["--restart-timeout", "-1"], &["--restart-timeout", "'-1'"]);
    // Zero would fail every restart before the successor could start.
    assert_usage_error(
        &["--restart-timeout", "0"],
        &["--restart-timeout", "more than 0"],
    );
}

#[test]
fn unparsable_listen_address_exits_2_naming_option_and_value() {
    assert_usage_error(&["--listen", "nonsense"], &["--listen", "'nonsense'"]);
}

#[test]
fn missing_value_exits_2_naming_the_option() {
    assert_usage_error(&["--listen"], &["--listen", "missing"]);
}

#[test]
fn help_exits_0_and_lists_every_option_and_the_default_port() {
    for flag in ["--help", "-h"] {
        let help = &stdout_of_quiet_success(flag);
        assert!(help.contains("usage: netgrace"), "{flag}:\n{help}");
        for option in [
            "-l, --listen",
            "--max-connections",
            "--max-buffer",
            "--drain-timeout",
            "--idle-timeout",
            "--restart-timeout",
            "-v, --verbose",
            "-q, --quiet",
            "-h, --help",
            "-V, --version",
            "5388",
        ] {
            assert!(
                help.contains(option),
                "{flag}: help lacks {option:?}:\n{help}"
            );
        }
    }
}

#[test]
fn version_exits_0_and_prints_name_and_crate_version() {
    for flag in ["--version", "-V"] {
        assert_eq!(
            stdout_of_quiet_success(flag),
            concat!("netgrace ", env!("CARGO_PKG_VERSION"), "\n"),
            "{flag}"
        );
    }
}

/// The test holds the port for the whole run, so the collision is certain, not a race.
#[test]
fn address_in_use_exits_1_with_one_line_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let run = run(&["-l", &addr]);
    let stderr = &run.stderr;
    assert_eq!(run.status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(run.stdout, "");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert!(
        stderr.starts_with(&format!("netgrace: bind {addr}: address already in use")),
        "stderr:\n{stderr}"
    );
}

/// `-q` quiets the logger, but the reason for a failed start is not a log line.
#[test]
fn quiet_still_reports_a_failed_bind() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let run = run(&["-qqq", "-l", &addr]);
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains(&addr) && run.stderr.contains("address already in use"),
        "stderr:\n{}",
        run.stderr
    );
}

/// The first signal: the client gets its echo, then a clean EOF; once it closes, the process
/// exits 0 with a report that counts it as drained.
fn first_signal_drains_then_exits_0(signal: &str) {
    let serving = Serving::start(&[]);
    let mut client = serving.connect();
    assert_echo(&mut client, b"hello, netgrace\n");

    serving.signal(signal);
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("a clean EOF, not a reset");
    assert_eq!(rest, b"", "nothing was left to echo");
    drop(client);

    let log = serving.wait_for_exit_0();
    let log_text = log.join("\n");
    assert!(log_text.contains("shutting down"), "log:\n{log_text}");
    // The default level is info: per-connection lines (debug) stay hidden.
    assert!(!log_text.contains("DEBUG"), "log:\n{log_text}");
    assert_report(
        &log,
        &[
            ("accepted", "1"),
            ("bytes_echoed", "16"),
            ("drained", "1"),
            ("forced", "0"),
            ("errors", "0"),
        ],
    );
}

#[test]
fn sigterm_drains_the_client_then_exits_0() {
    first_signal_drains_then_exits_0("TERM");
}

#[test]
fn sigint_drains_the_client_then_exits_0() {
    first_signal_drains_then_exits_0("INT");
}

/// The client never closes, so the graceful drain alone would last 60 s; the second signal
/// ends it at once. [`Serving::wait_for_exit_0`] allows only `common::TIMEOUT`.
#[test]
fn second_signal_stops_at_once_and_counts_the_client_forced() {
    let mut serving = Serving::start(&["--drain-timeout", "60"]);
    let mut client = serving.connect();
    assert_echo(&mut client, b"ping\n");

    serving.signal("TERM");
    // The reactor's line: the drain is under way and waiting for this client.
    serving.wait_for("draining 1 connection");
    serving.signal("TERM");

    let log = serving.wait_for_exit_0();
    assert_report(
        &log,
        &[("accepted", "1"), ("drained", "0"), ("forced", "1")],
    );
    let shutdown_ms: f64 = report(&log)["shutdown_ms"].parse().expect("shutdown_ms");
    assert!(shutdown_ms < 60_000.0, "shutdown_ms={shutdown_ms}");
    // Held open until here: closing earlier would let the drain finish on its own.
    drop(client);
}

#[test]
fn verbose_logs_each_accepted_connection_at_debug() {
    let mut serving = Serving::start(&["-v"]);
    let client = serving.connect();
    let peer = client.local_addr().expect("local_addr");
    let line = serving.wait_for(&format!("accepted from {peer}"));
    assert!(line.contains("DEBUG"), "{line}");
    drop(client);

    serving.signal("TERM");
    let log = serving.wait_for_exit_0();
    assert_report(&log, &[("accepted", "1"), ("forced", "0")]);
}
