//! What `/proc/PID` says about a running [`Serving`]: its descriptors, its descriptor table,
//! its memory and its CPU time (proc(5)).

use super::Serving;

impl Serving {
    /// A file of the (first) worker's `/proc/PID` directory.
    fn proc_path(&self, file: &str) -> String {
        format!("/proc/{}/{file}", self.workers[0])
    }

    /// Descriptors the server holds now (entries of `/proc/PID/fd`).
    pub fn descriptors(&self) -> usize {
        std::fs::read_dir(self.proc_path("fd"))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// The server's resident set now, in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        self.status_number("VmRSS")
    }

    /// Slots in the server's descriptor table now (`FDSize` in `/proc/PID/status`): how many
    /// descriptors it can hold before the kernel must grow the table.
    pub fn descriptor_table_size(&self) -> u64 {
        self.status_number("FDSize")
    }

    /// The number in a `/proc/PID/status` line such as `VmRSS:     1234 kB` or `FDSize: 64`.
    #[track_caller]
    fn status_number(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(self.proc_path("status")).expect("read /proc/PID/status");
        let line = status
            .lines()
            .find(|line| {
                line.strip_prefix(field)
                    .is_some_and(|rest| rest.starts_with(':'))
            })
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status:\n{status}"));
        line.split_whitespace()
            .nth(1)
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("{field} line: {line:?}"))
    }

    /// User plus system CPU time of the server so far, in clock ticks (`/proc/PID/stat`).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(self.proc_path("stat")).expect("read /proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks = |i: usize| fields[i].parse::<u64>().expect("tick count");
        ticks(11) + ticks(12)
    }
}
