//! A server's log, and parsers for its lines. stdout and stderr are one pipe, so lines come in
//! the order written, the master's and the workers' (they inherit its streams); a thread reads
//! it onto a channel, each line with its instant, so the server never blocks on a full pipe.

use std::io::{self, BufRead, BufReader, PipeReader};
use std::sync::mpsc::{self, Receiver};
use std::{net::SocketAddr, process::Command, time::Duration, time::Instant};

/// The lines of one server's log, as they arrive; the last ones read, for error messages.
pub struct Log {
    lines: Receiver<(Instant, String)>,
    /// The last line that was not wanted, for error messages.
    last: String,
}

/// A line, and when it was read.
pub type Line = (Instant, String);

impl Log {
    /// Points `command`'s stdout and stderr at one new pipe; drop `command` once spawned (it
    /// holds the writing end) so that the log ends with the last process that inherited it.
    pub fn capture(command: &mut Command) -> io::Result<PipeReader> {
        let (reader, writer) = io::pipe()?;
        command.stdout(writer.try_clone()?).stderr(writer);
        Ok(reader)
    }

    /// Starts the thread that reads `pipe` line by line; it ends with the pipe.
    pub fn follow(pipe: PipeReader) -> Log {
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if send.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Log {
            lines,
            last: String::new(),
        }
    }

    /// Reads lines until one satisfies `want`, for at most `within`; returns it with the
    /// instant it was read, or an error quoting the last line.
    pub fn wait_for(&mut self, want: impl Fn(&str) -> bool, within: Duration) -> io::Result<Line> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline - deadline.min(Instant::now());
            let (at, line) = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(err) => {
                    let last = &self.last;
                    return Err(io::Error::other(format!("{err} within {within:?}: {last}")));
                }
            };
            if want(&line) {
                return Ok((at, line));
            }
            self.last = line;
        }
    }

    /// Every line still to come, until the log ends or `timeout`, joined by newlines.
    pub fn rest(self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let left = || deadline - deadline.min(Instant::now());
        std::iter::from_fn(|| self.lines.recv_timeout(left()).ok())
            .map(|(_, line)| line + "\n")
            .collect()
    }
}

/// The address of a `listening on ADDR` line: the first word after it.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The pids after `marker` and the word `pid(s)`: `serving: 2 workers: pids 7 8` → [7, 8].
pub fn pids_after(line: &str, marker: &str) -> Vec<u32> {
    let Some((_, rest)) = line.split_once(marker) else {
        return Vec::new();
    };
    let mut words = rest.split_whitespace();
    if !words.any(|word| word == "pid" || word == "pids") {
        return Vec::new();
    }
    let pid = |word: &str| word.trim_end_matches([';', ',']).parse().ok();
    words.map_while(pid).collect()
}

/// The value after `key=` in a line (`shutdown_ms=143.2`, `accepted=512`).
pub fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let (_, rest) = line.split_once(&format!("{key}="))?;
    rest.split_whitespace().next()?.parse().ok()
}
