//! A server's log, followed line by line, and the parsers for the netgrace lines the benchmark
//! acts on.
//!
//! The server's stdout and stderr are one pipe, so the benchmark reads every line whichever
//! stream the server logs to, in the order the lines were written: the master's and every
//! worker's (a worker inherits the master's streams). A thread reads the pipe onto a channel,
//! each line with the instant it was read, so the server never blocks on a full pipe.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, PipeReader};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines kept for error messages.
const TRANSCRIPT_LINES: usize = 200;
/// Lines of the transcript an error message quotes.
const QUOTED_LINES: usize = 12;

/// The lines of one server's log, as they arrive.
pub struct Log {
    lines: Receiver<(Instant, String)>,
    /// The last lines handed out, the newest last, for error messages.
    transcript: VecDeque<String>,
    reader: Option<JoinHandle<()>>,
}

/// Points `command`'s stdout and stderr at one new pipe and returns its reading end. Drop
/// `command` once it has spawned (it holds the writing end), then [`Log::follow`] the reader:
/// the log ends when every process that inherited the pipe is gone.
pub fn capture(command: &mut Command) -> io::Result<PipeReader> {
    let (reader, writer) = io::pipe()?;
    command.stdout(writer.try_clone()?).stderr(writer);
    Ok(reader)
}

impl Log {
    /// Starts the thread that reads `pipe` line by line.
    pub fn follow(pipe: PipeReader) -> Log {
        let (send, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if send.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Log {
            lines,
            transcript: VecDeque::new(),
            reader: Some(reader),
        }
    }

    /// The next line, when it was read, at most `timeout` from now; `Ok(None)` on the timeout.
    ///
    /// # Errors
    /// `UnexpectedEof` once every writer is gone and every line was read.
    pub fn next(&mut self, timeout: Duration) -> io::Result<Option<(Instant, String)>> {
        match self.lines.recv_timeout(timeout) {
            Ok((at, line)) => {
                if self.transcript.len() == TRANSCRIPT_LINES {
                    self.transcript.pop_front();
                }
                self.transcript.push_back(line.clone());
                Ok(Some((at, line)))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                let msg = format!("the server's log ended: {}", self.transcript());
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg))
            }
        }
    }

    /// Reads lines until one satisfies `wanted`, for at most `timeout`; `seen` gets every line
    /// read on the way, the wanted one included.
    ///
    /// # Errors
    /// `TimedOut`, or `UnexpectedEof` if the server is gone, each quoting the last lines.
    pub fn await_line(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
        mut seen: impl FnMut(Instant, &str),
    ) -> io::Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((at, line)) = self.next(left)? else {
                let msg = format!("no such line within {timeout:?}: {}", self.transcript());
                return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
            };
            seen(at, &line);
            if wanted(&line) {
                return Ok((at, line));
            }
        }
    }

    /// Every line still to come, until the log ends or `timeout`, joined by newlines.
    pub fn rest(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut rest = Vec::new();
        while let Ok(Some((_, line))) =
            self.next(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push(line);
        }
        rest.join("\n")
    }

    /// The last lines read, the newest last, on one line.
    pub fn transcript(&self) -> String {
        let skip = self.transcript.len().saturating_sub(QUOTED_LINES);
        let last: Vec<&str> = self
            .transcript
            .iter()
            .skip(skip)
            .map(String::as_str)
            .collect();
        last.join(" | ")
    }
}

/// The address of a `listening on ADDR` line: the first word after it (an inherited socket adds
/// "(inherited at ...)", and a log format may add more).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The pids after `marker` in a netgrace line: in `serving: 2 workers: pids 7 8`, after
/// `"serving: "`, the numbers that follow the word `pid` or `pids`, up to the first word that
/// is not one; empty if there is no such marker or word.
pub fn pids_after(line: &str, marker: &str) -> Vec<u32> {
    let Some((_, rest)) = line.split_once(marker) else {
        return Vec::new();
    };
    let mut words = rest.split_whitespace();
    if !words.any(|word| word == "pid" || word == "pids") {
        return Vec::new();
    }
    words
        .map_while(|word| word.trim_end_matches([';', ',']).parse().ok())
        .collect()
}
