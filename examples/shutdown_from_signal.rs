//! The smallest program that ties SIGINT and SIGTERM to a `ShutdownHandle`: the first signal
//! stops gracefully, a second one stops at once, as the `netgrace` binary does.
//!
//! Run it with `cargo run --example shutdown_from_signal`, poke it with `nc 127.0.0.1 PORT` (the
//! port it prints), then press Ctrl-C: `nc` receives its echo, then EOF, and the program prints
//! its report and ends. It needs the default `cli` feature (for `signal-hook`).

use std::io;

use netgrace::{Config, Server};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> io::Result<()> {
    let server = Server::bind(Config::new(
        "127.0.0.1:0".parse().map_err(io::Error::other)?,
    ))?;
    let handle = server.shutdown_handle();

    // Register before announcing the address, so an early signal cannot kill the process.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        let mut signals = signals.forever();
        if signals.next().is_some() {
            handle.shutdown();
        }
        if signals.next().is_some() {
            handle.shutdown_now();
        }
    });

    println!(
        "listening on {}; Ctrl-C to stop (twice: at once)",
        server.local_addr()
    );
    let report = server.run()?;
    println!("report: {report}");
    Ok(())
}
