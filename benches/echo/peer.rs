//! The peer: a tokio echo server as users write one (a task per connection, an 8 KiB buffer, read
//! then `write_all`), in both flavours (multi-thread sizes its pool by the CPU affinity). On
//! SIGTERM `main` returns and the kernel closes each socket: no drain, the cheapest stop there is.

use std::{io, net::SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

/// Serves echo on `addr` until SIGTERM or SIGINT.
pub fn serve(addr: SocketAddr, multi_thread: bool) -> io::Result<()> {
    let mut builder = match multi_thread {
        true => tokio::runtime::Builder::new_multi_thread(),
        false => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder.enable_all().build()?;
    runtime.block_on(accept_until_signal(addr))
}

async fn accept_until_signal(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => drop(tokio::spawn(echo(socket))),
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
    while let Ok(n @ 1..) = socket.read(&mut buf).await {
        if socket.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
