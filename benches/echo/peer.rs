//! The peer: a tokio echo server written the way users write one (a task per connection, an
//! 8 KiB buffer, read then `write_all`), in tokio's two flavours.
//!
//! `compare` starts it as a child process; by hand:
//! `cargo bench --bench echo -- serve-tokio-ct 127.0.0.1:5389`, then `nc 127.0.0.1 5389`.
//!
//! It logs `listening on ADDR` to stdout, like netgrace. On SIGTERM or SIGINT it stops as such
//! servers usually do: `main` returns, the runtime drops every task, and the process exits, so
//! the kernel closes each socket. For an idle connection that is the same FIN netgrace sends,
//! with no drain in user space: the cheapest stop there is, and the one netgrace is timed against.
//!
//! The multi-thread flavour sizes its worker pool by `std::thread::available_parallelism`, which
//! honours CPU affinity: pinned to one core, as `compare` pins every server, it runs one worker.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

/// Serves echo on `addr` until SIGTERM or SIGINT.
pub fn serve(addr: SocketAddr, multi_thread: bool) -> io::Result<()> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = builder.enable_all().build()?;
    runtime.block_on(accept_until_signal(addr))
    // Dropping the runtime here drops every connection task, closing its socket.
}

async fn accept_until_signal(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    tokio::spawn(echo(socket));
                }
                // A client that gave up, or out of descriptors: as most users do, go on.
                Err(err) => println!("accept: {err}"),
            },
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

async fn echo(mut socket: TcpStream) {
    // Users set this too: 64-byte messages must not wait for delayed ACKs (Nagle).
    let _ = socket.set_nodelay(true);
    let mut buf = [0u8; 8 * 1024];
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if socket.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
