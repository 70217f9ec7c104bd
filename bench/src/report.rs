//! Results as files: a markdown table headed by the machine it ran on, and the same figures as
//! JSON, under `bench/results/`. Figures quoted anywhere else come from these files.

use std::{fmt::Write as _, path::Path, process::Command};

/// The machine and the run, written above every table: figures mean nothing without them.
#[derive(Clone, Debug)]
pub(crate) struct Machine {
    kernel: String,
    cpu: String,
    cores: usize,
    date: String,
    command: String,
    load: String,
    commit: String,
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

impl Machine {
    /// Describe this machine now; `command` is how the run was started.
    pub(crate) fn detect(command: &str, root: &Path) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let root = root.to_string_lossy().into_owned();
        let dirty = !command_output("git", &["-C", &root, "status", "--porcelain"]).is_empty();
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
            command: command.to_owned(),
            load: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            commit: format!(
                "{}{}",
                command_output("git", &["-C", &root, "rev-parse", "--short", "HEAD"]),
                if dirty { " + uncommitted changes" } else { "" }
            ),
        }
    }

    /// One line for a plot: kernel, CPU, cores, date.
    pub(crate) fn caption(&self) -> String {
        format!(
            "Linux {}, {}, {} cores, {}",
            self.kernel, self.cpu, self.cores, self.date
        )
    }

    fn md(&self) -> String {
        table(
            &[
                "kernel",
                "CPU",
                "cores",
                "date",
                "load avg at start",
                "commit",
                "command",
            ],
            &[vec![
                self.kernel.clone(),
                self.cpu.clone(),
                self.cores.to_string(),
                self.date.clone(),
                self.load.clone(),
                self.commit.clone(),
                format!("`{}`", self.command),
            ]],
        )
    }

    fn json(&self) -> serde_json::Value {
        let Machine {
            kernel,
            cpu,
            cores,
            date,
            command,
            load,
            commit,
        } = self;
        serde_json::json!({
            "kernel": kernel, "cpu": cpu, "cores": cores, "date": date,
            "command": command, "loadavg_at_start": load, "commit": commit,
        })
    }
}

/// One benchmark's results.
#[derive(Debug)]
pub(crate) struct Report {
    /// File stem under `bench/results/`.
    pub(crate) name: &'static str,
    /// Heading of the markdown file.
    pub(crate) title: String,
    /// Markdown body (tables and notes) below the machine table.
    pub(crate) md: String,
    /// The figures.
    pub(crate) json: serde_json::Value,
}

impl Report {
    /// Write `<name>.md` and `<name>.json` into `dir`.
    pub(crate) fn write(&self, dir: &Path, machine: &Machine) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let md = format!(
            "# {}\n\n{}\n{}",
            self.title,
            machine.md(),
            self.md.trim_end()
        );
        std::fs::write(dir.join(format!("{}.md", self.name)), md + "\n")?;
        let json = serde_json::json!({
            "benchmark": self.name,
            "machine": machine.json(),
            "results": self.json,
        });
        let text = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(format!("{}.json", self.name)), text + "\n")
    }
}

/// A markdown table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n", headers.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(headers.len()));
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}
