//! System calls of a server's processes, counted by `perf stat` on the syscall tracepoints: the
//! server runs at full speed (`strace -c` would stop it at every call and so under-count the
//! `epoll_wait` share). `apt-get install -y linux-perf`; without it these figures are skipped.

use std::process::{Child, Command, Stdio};
use std::{io, path::PathBuf, time::Duration};

/// The accept, read, write and poll calls an echo server makes, each counted on its own.
const CALLS: &str = "accept accept4 read recvfrom readv recvmsg write sendto writev sendmsg \
                     epoll_wait epoll_pwait epoll_pwait2";

/// Whether `perf` can count syscalls here.
pub fn available() -> bool {
    let mut perf = Command::new("perf");
    perf.args(["stat", "-e", "raw_syscalls:sys_enter", "true"]);
    let status = perf.stdout(Stdio::null()).stderr(Stdio::null()).status();
    status.is_ok_and(|status| status.success())
}

/// `perf stat` attached to processes, writing its counts to `output`.
pub struct Tracer {
    perf: Child,
    output: PathBuf,
}

impl Tracer {
    /// Attaches to every thread of `pids` (quiet meanwhile) and waits until it counts.
    pub fn attach(pids: &[u32]) -> io::Result<Tracer> {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let output = std::env::temp_dir().join(format!("echo-syscalls-{}.txt", list.join("-")));
        let mut perf = Command::new("perf");
        perf.args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o"])
            .arg(&output);
        for call in CALLS.split_whitespace() {
            perf.arg("-e").arg(format!("syscalls:sys_enter_{call}"));
        }
        perf.arg("-p").arg(list.join(",")).stderr(Stdio::null());
        let perf = perf.spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Tracer { perf, output })
    }

    /// Detaches (SIGINT makes `perf` write its summary); returns the calls counted in all, and
    /// those of `CALLS` that were made, most frequent first.
    pub fn finish(mut self) -> io::Result<(u64, Vec<(String, u64)>)> {
        super::process::signal(self.perf.id(), rustix::process::Signal::INT)?;
        self.perf.wait()?;
        let text = std::fs::read_to_string(&self.output)?;
        let _ = std::fs::remove_file(&self.output);
        let (mut total, mut by_name) = (0, Vec::new());
        // `-x,` lines: `COUNT,UNIT,EVENT,...`.
        for fields in text.lines().map(|line| line.split(',').collect::<Vec<_>>()) {
            let (Some(Ok(calls)), Some(event)) = (fields.first().map(|c| c.parse()), fields.get(2))
            else {
                continue;
            };
            match event.strip_prefix("syscalls:sys_enter_") {
                Some(call) if calls > 0 => by_name.push((call.to_string(), calls)),
                None if *event == "raw_syscalls:sys_enter" => total = calls,
                _ => {}
            }
        }
        by_name.sort_by_key(|(_, calls)| std::cmp::Reverse(*calls));
        Ok((total, by_name))
    }
}
