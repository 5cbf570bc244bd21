//! The Go example netgrace descends from, as a demo: 10 clients each send 10 lines
//! (`client #i, count j`) and read each one back, then the server shuts down gracefully and
//! prints its report.
//!
//! Run it with `cargo run --example ten_clients`; it ends by itself in about a second. It binds a
//! free port and serves only its own clients; to poke a server by hand with
//! `nc 127.0.0.1 5388`, run the binary (`cargo run --release`) instead.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use netgrace::{Config, Server};

const CLIENTS: usize = 10;
const LINES: usize = 10;
/// The Go example waits 100 ms between lines; so do we, to keep its rhythm.
const PAUSE: Duration = Duration::from_millis(100);

fn main() -> io::Result<()> {
    let server = Server::bind(Config::new(
        "127.0.0.1:0".parse().map_err(io::Error::other)?,
    ))?;
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let serving = std::thread::spawn(move || server.run());

    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| std::thread::spawn(move || client(addr, i)))
        .collect();
    for client in clients {
        client
            .join()
            .map_err(|_| io::Error::other("client panicked"))??;
    }

    handle.shutdown();
    let report = serving
        .join()
        .map_err(|_| io::Error::other("server thread panicked"))??;
    println!("report: {report}");
    Ok(())
}

fn client(addr: SocketAddr, i: usize) -> io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for j in 0..LINES {
        let line = format!("client #{i}, count {j}\n");
        writer.write_all(line.as_bytes())?;
        let mut echo = String::new();
        reader.read_line(&mut echo)?;
        if echo != line {
            return Err(io::Error::other(format!(
                "sent {line:?}, got back {echo:?}"
            )));
        }
        print!("{echo}");
        std::thread::sleep(PAUSE);
    }
    Ok(())
}
