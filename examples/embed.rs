//! Embedding netgrace in a host program: the server runs on its own thread, the host talks to it,
//! then stops it from the main thread and prints the report.
//!
//! Run it with `cargo run --example embed`; it ends by itself. While it runs you could poke it with
//! `nc 127.0.0.1 PORT` (the port it prints), but it only serves for as long as its own client
//! takes.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use netgrace::{Config, Server};

fn main() -> io::Result<()> {
    let config = Config::new("127.0.0.1:0".parse().map_err(io::Error::other)?)
        .max_connections(16)
        .drain_timeout(Duration::from_secs(2));

    let server = Server::bind(config)?;
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let serving = std::thread::spawn(move || server.run());
    println!("serving on {addr}");

    // The host's own work: a client that sends three lines and reads each echo back.
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for line in ["one", "two", "three"] {
        writeln!(writer, "{line}")?;
        let mut echo = String::new();
        reader.read_line(&mut echo)?;
        println!("echoed: {}", echo.trim_end());
    }

    // Graceful stop from this thread; the client sees EOF, then closes, and the drain completes.
    handle.shutdown();
    let mut rest = String::new();
    reader.read_line(&mut rest)?;
    drop((reader, writer));

    let report = serving
        .join()
        .map_err(|_| io::Error::other("server thread panicked"))??;
    println!("report: {report}");
    Ok(())
}
