//! Running QEMU and reading what the guest reports on its serial console: per suite, the test
//! harness's results and how long it took; for the run, whether the kernel panicked, the init
//! gave up, or the time limit passed.

use std::{
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::guest::MARK;

/// What one test binary did in the guest.
#[derive(Debug, Default)]
pub(crate) struct SuiteResult {
    /// Suite name.
    pub(crate) name: String,
    /// Exit status of the binary; `None` if the guest never reported its end.
    pub(crate) exit: Option<i32>,
    /// From the harness's `test result:` line.
    pub(crate) passed: u32,
    /// Tests that failed.
    pub(crate) failed: Vec<String>,
    /// Tests the harness reported as ignored.
    pub(crate) ignored: u32,
    /// Wall time on the host, from its begin to its end marker.
    pub(crate) time: Duration,
}

impl SuiteResult {
    /// Whether the binary ran to the end and passed.
    pub(crate) fn ok(&self) -> bool {
        self.exit == Some(0) && self.failed.is_empty()
    }
}

/// What a whole VM run did.
#[derive(Debug, Default)]
pub(crate) struct VmResult {
    /// The release the guest reported.
    pub(crate) release: Option<String>,
    /// Host time from starting QEMU to the first suite's start.
    pub(crate) boot: Option<Duration>,
    /// Host time of the whole run.
    pub(crate) total: Duration,
    /// Per suite, in the order they ran.
    pub(crate) suites: Vec<SuiteResult>,
    /// Modules the init could not load.
    pub(crate) module_failures: Vec<String>,
    /// Kernel lines that signal trouble (panic, oops, BUG, WARNING), first few.
    pub(crate) kernel_trouble: Vec<String>,
    /// Whether the kernel panicked.
    pub(crate) panicked: bool,
    /// The init's reason for giving up, if it did.
    pub(crate) fatal: Option<String>,
    /// Whether the init said it was done.
    pub(crate) done: bool,
    /// Whether the time limit ended the run.
    pub(crate) timed_out: bool,
}

impl VmResult {
    /// Whether everything ran and passed.
    pub(crate) fn ok(&self) -> bool {
        self.done
            && !self.panicked
            && !self.timed_out
            && self.fatal.is_none()
            && self.suites.iter().all(SuiteResult::ok)
    }
}

/// Kernel messages worth repeating in the summary.
const TROUBLE: &[&str] = &[
    "Kernel panic",
    "BUG:",
    "Oops",
    "WARNING:",
    "soft lockup",
    "hung_task",
    "Call Trace",
];

/// Run `qemu` until the guest ends or `limit` passes (then it is killed, by its pid). Every
/// line goes to `log` and, live, to standard output.
pub(crate) fn run(mut qemu: Command, limit: Duration, log: &Path) -> anyhow::Result<VmResult> {
    let mut log =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let start = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers = [
        forward(child.stdout.take().context("qemu stdout")?, "", tx.clone()),
        forward(child.stderr.take().context("qemu stderr")?, "qemu: ", tx),
    ];
    let mut result = VmResult::default();
    let mut current: Option<(SuiteResult, Instant)> = None;
    let deadline = start + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                result.timed_out = true;
                kill(&mut child);
                break;
            }
        };
        println!("{line}");
        writeln!(log, "{line}").context("writing the console log")?;
        read_line(&line, &mut result, &mut current, start);
    }
    let _ = child.wait();
    for r in readers {
        let _ = r.join();
    }
    if let Some((mut s, began)) = current.take() {
        s.time = began.elapsed();
        result.suites.push(s);
    }
    result.total = start.elapsed();
    Ok(result)
}

/// End QEMU: SIGKILL to the process this module started, by its pid.
fn kill(child: &mut Child) {
    let _ = child.kill();
}

/// Lines of `from` into `tx`, carriage returns and invalid UTF-8 cleaned.
fn forward(
    from: impl Read + Send + 'static,
    prefix: &'static str,
    tx: mpsc::Sender<String>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let line = text.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// Fold one console line into the result.
fn read_line(
    line: &str,
    result: &mut VmResult,
    current: &mut Option<(SuiteResult, Instant)>,
    start: Instant,
) {
    if let Some(at) = line.find(MARK) {
        let rest = line[at + MARK.len()..].trim();
        let (word, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        match word {
            "kernel" => result.release = Some(arg.to_owned()),
            "module-failed" => result.module_failures.push(arg.to_owned()),
            "fatal" => result.fatal = Some(arg.to_owned()),
            "done" => result.done = true,
            "begin" => {
                if result.boot.is_none() {
                    result.boot = Some(start.elapsed());
                }
                let s = SuiteResult {
                    name: arg.to_owned(),
                    ..SuiteResult::default()
                };
                *current = Some((s, Instant::now()));
            }
            "end" => {
                if let Some((mut s, began)) = current.take() {
                    s.time = began.elapsed();
                    s.exit = arg.rsplit(' ').next().and_then(|c| c.parse().ok());
                    result.suites.push(s);
                }
            }
            _ => {}
        }
        return;
    }
    if line.contains("Kernel panic") {
        result.panicked = true;
    }
    if TROUBLE.iter().any(|t| line.contains(t)) && result.kernel_trouble.len() < 20 {
        result.kernel_trouble.push(line.to_owned());
    }
    let Some((s, _)) = current.as_mut() else {
        return;
    };
    if let Some(name) = line
        .strip_prefix("test ")
        .and_then(|l| l.strip_suffix(" ... FAILED"))
    {
        s.failed.push(name.to_owned());
    } else if let Some(summary) = line.strip_prefix("test result: ") {
        // "ok. 7 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 1s"
        for part in summary.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let n: u32 = n.parse().unwrap_or(0);
            match what {
                "passed" => s.passed += n,
                "ignored" => s.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_make_a_result() {
        let lines = [
            "[    1.0] something",
            "@@pg-vm kernel 6.1.0-57-amd64",
            "@@pg-vm module-failed bonding",
            "@@pg-vm begin datapath",
            "test a ... ok",
            "test b ... FAILED",
            "test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; \
             finished in 3.5s",
            "@@pg-vm end datapath 101",
            "@@pg-vm begin attach",
            "test result: ok. 9 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "@@pg-vm end attach 0",
            "[   99.0] WARNING: CPU: 0 PID: 1 at net/core/dev.c:1",
            "@@pg-vm done",
        ];
        let mut r = VmResult::default();
        let mut cur = None;
        for l in lines {
            read_line(l, &mut r, &mut cur, Instant::now());
        }
        assert_eq!(r.release.as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(r.module_failures, ["bonding"]);
        assert_eq!(r.suites.len(), 2);
        let d = &r.suites[0];
        assert_eq!((d.passed, d.ignored, d.exit), (1, 2, Some(101)));
        assert_eq!(d.failed, ["b"]);
        assert!(!d.ok() && r.suites[1].ok());
        assert!(r.done && !r.panicked && !r.ok());
        assert_eq!(r.kernel_trouble.len(), 1);
    }

    #[test]
    fn a_suite_without_end_is_not_ok() {
        let mut r = VmResult::default();
        let mut cur = None;
        read_line("@@pg-vm begin hostile", &mut r, &mut cur, Instant::now());
        read_line(
            "Kernel panic - not syncing: x",
            &mut r,
            &mut cur,
            Instant::now(),
        );
        assert!(r.panicked && cur.is_some() && !r.ok());
    }
}
