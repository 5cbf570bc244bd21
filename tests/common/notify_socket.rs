//! A stand-in for systemd's notify socket (sd_notify(3)), for tests/notify.rs: a Unix datagram
//! socket, at a path or abstract, that learns each sender's pid from the kernel
//! (`SO_PASSCRED`, `SCM_CREDENTIALS`), as systemd does to tell the main process from the rest.

use std::ffi::OsString;
use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use crate::common::temp_dir::unique_name;
use crate::common::TIMEOUT;

/// One datagram: who sent it, and its `KEY=VALUE` lines.
#[derive(Debug, Clone)]
pub struct Notification {
    pub pid: u32,
    pub lines: Vec<String>,
}

impl Notification {
    /// Asserts that it is exactly `lines`, sent by `pid`.
    #[track_caller]
    pub fn assert_from(&self, pid: u32, lines: &[&str]) {
        assert_eq!(self.lines, lines, "{self:?}");
        assert_eq!(self.pid, pid, "sender of {self:?}");
    }

    /// Asserts that it is `READY=1` and a `STATUS=`, sent by `pid`; returns the status.
    #[track_caller]
    pub fn assert_ready_from(&self, pid: u32) -> &str {
        assert_eq!(self.pid, pid, "sender of {self:?}");
        let status = match &self.lines[..] {
            [ready, status] if ready == "READY=1" => status.strip_prefix("STATUS="),
            _ => None,
        };
        status.unwrap_or_else(|| panic!("READY=1 and STATUS=: {self:?}"))
    }

    /// `RELOADING=1` and `MONOTONIC_USEC=` (CLOCK_MONOTONIC, in µs: not zero), sent by `pid`.
    #[track_caller]
    pub fn assert_reloading_from(&self, pid: u32) {
        assert_eq!(self.pid, pid, "sender of {self:?}");
        let usec = self
            .lines
            .get(1)
            .and_then(|line| line.strip_prefix("MONOTONIC_USEC="))
            .and_then(|usec| usec.parse::<u64>().ok());
        assert!(
            self.lines.len() == 2 && self.lines[0] == "RELOADING=1" && usec > Some(0),
            "RELOADING=1 and MONOTONIC_USEC=: {self:?}"
        );
    }
}

/// The notify socket, bound to a fresh name; its file (if any) removed on drop.
pub struct NotifySocket {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` says: a path, or `@name` for an abstract socket.
    pub name: OsString,
    /// The file to remove on drop; an abstract socket has none.
    file: Option<PathBuf>,
    /// Every notification received so far, in order.
    pub received: Vec<Notification>,
}

impl NotifySocket {
    /// A socket at a fresh path under the temporary directory.
    #[track_caller]
    pub fn bind() -> NotifySocket {
        let path = std::env::temp_dir().join(unique_name("notify") + ".sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket::new(socket, path.clone().into(), Some(path))
    }

    /// A socket in the abstract namespace (unix(7)), which `NOTIFY_SOCKET` writes `@name`.
    #[track_caller]
    pub fn bind_abstract() -> NotifySocket {
        let name = unique_name("notify");
        let addr = SocketAddr::from_abstract_name(&name).expect("abstract name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
        NotifySocket::new(socket, format!("@{name}").into(), None)
    }

    #[track_caller]
    fn new(socket: UnixDatagram, name: OsString, file: Option<PathBuf>) -> NotifySocket {
        rustix::net::sockopt::set_socket_passcred(&socket, true).expect("SO_PASSCRED");
        socket
            .set_read_timeout(Some(TIMEOUT))
            .expect("set_read_timeout");
        NotifySocket {
            socket,
            name,
            file,
            received: Vec::new(),
        }
    }

    /// The next notification; fails the test if none arrives within [`TIMEOUT`].
    #[track_caller]
    pub fn recv(&mut self) -> Notification {
        match self.try_recv() {
            Ok(notification) => notification,
            Err(err) => panic!(
                "no notification within {TIMEOUT:?} ({err}); received so far: {:?}",
                self.received
            ),
        }
    }

    fn try_recv(&mut self) -> io::Result<Notification> {
        let mut buf = [0; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let message = rustix::net::recvmsg(
            &self.socket,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::empty(),
        )?;
        let pid = control
            .drain()
            .find_map(|message| match message {
                RecvAncillaryMessage::ScmCredentials(credentials) => Some(credentials.pid),
                _ => None,
            })
            .ok_or_else(|| io::Error::other("a datagram without the sender's credentials"))?;
        let text = String::from_utf8_lossy(&buf[..message.bytes]);
        let notification = Notification {
            pid: pid.as_raw_pid().unsigned_abs(),
            lines: text.lines().map(str::to_owned).collect(),
        };
        self.received.push(notification.clone());
        Ok(notification)
    }

    /// Asserts that nothing more is queued; call it once every sender has exited.
    #[track_caller]
    pub fn assert_no_more(&mut self) {
        self.socket.set_nonblocking(true).expect("set_nonblocking");
        match self.try_recv() {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("unexpected: {other:?}; before it: {:?}", self.received),
        }
    }

    /// Asserts that every notification so far came from `pid`, and none said `MAINPID=`:
    /// the main process never changed, and no other process spoke.
    #[track_caller]
    pub fn assert_all_from(&self, pid: u32) {
        let others: Vec<&Notification> = self
            .received
            .iter()
            .filter(|n| n.pid != pid || n.lines.iter().any(|line| line.starts_with("MAINPID=")))
            .collect();
        assert!(others.is_empty(), "not from pid {pid} alone: {others:?}");
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }
}
