//! Command-line arguments as typed, before any validation (clap derive).

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Enforce the documented port matrices of virtualization products on this host, with XDP.
#[derive(Debug, Parser)]
#[command(name = "portguard", version, about, propagate_version = true)]
pub struct Cli {
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the policy comes from; every verb that reads policy takes these.
#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// The site file.
    #[arg(long, default_value = crate::paths::SITE_FILE, env = "PORTGUARD_SITE")]
    pub site: PathBuf,
    /// Directory of product files (default: the installed ones, else ./policies).
    #[arg(long, env = "PORTGUARD_POLICIES")]
    pub policies: Option<PathBuf>,
}

/// Which host the policy is compiled for.
#[derive(Debug, Args, Clone)]
pub struct HostArgs {
    /// This host's roles (comma-separated); else the site's [host] roles; else derived from
    /// `--dst` or from this machine's addresses.
    #[arg(long, value_delimiter = ',')]
    pub host_roles: Vec<String>,
}

/// Where the daemon keeps its pins and state; every verb that touches them takes these.
#[derive(Debug, Args, Clone)]
pub struct StateArgs {
    /// bpffs directory of pinned programs, links and maps.
    #[arg(long, default_value = crate::paths::PIN_DIR, env = "PORTGUARD_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// Directory of the daemon's state file and counter samples.
    #[arg(long, default_value = crate::paths::RUN_DIR, env = "PORTGUARD_RUN_DIR")]
    pub run_dir: PathBuf,
}

/// `enforce` or `audit`, for `run --mode`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ModeArg {
    /// Drop what the policy does not allow.
    Enforce,
    /// Pass everything; report what would be dropped.
    Audit,
}

/// Transport protocol for `explain`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProtoArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
    /// ICMP (IPv4) or `ICMPv6`, by the address family.
    Icmp,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the site file and the product files it uses.
    Check {
        /// Policy source.
        #[command(flatten)]
        policy: PolicyArgs,
        /// Output diagnostics as JSON.
        #[arg(long)]
        json: bool,
        /// Treat every warning as an error (exit 1 if there is any).
        #[arg(long)]
        strict: bool,
        /// Pass even if the policy would refuse new SSH connections like the one this runs in.
        #[arg(long)]
        force: bool,
    },
    /// Show the rules that apply to this host, in the order the datapath evaluates them.
    Compile {
        /// Policy source.
        #[command(flatten)]
        policy: PolicyArgs,
        /// Host selection.
        #[command(flatten)]
        host: HostArgs,
        /// Compile for the host that owns this address.
        #[arg(long)]
        dst: Option<IpAddr>,
        /// Output as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Would this flow pass, and by which rule?
    Explain {
        /// Policy source.
        #[command(flatten)]
        policy: PolicyArgs,
        /// Host selection.
        #[command(flatten)]
        host: HostArgs,
        /// Source address of the flow.
        #[arg(long)]
        src: IpAddr,
        /// Destination address (an address of the host judged).
        #[arg(long)]
        dst: IpAddr,
        /// Protocol.
        #[arg(long, value_enum)]
        proto: ProtoArg,
        /// Destination port (tcp, udp, sctp).
        #[arg(long, required_if_eq_any = [("proto", "tcp"), ("proto", "udp"), ("proto", "sctp")])]
        dport: Option<u16>,
        /// Source port (default 40000: an ephemeral port).
        #[arg(long, default_value_t = 40000)]
        sport: u16,
        /// ICMP type (icmp).
        #[arg(long, required_if_eq("proto", "icmp"))]
        icmp_type: Option<u8>,
        /// ICMP code.
        #[arg(long, default_value_t = 0)]
        icmp_code: u8,
        /// Output as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 1 when the flow is denied (0 when allowed), for scripts.
        #[arg(long)]
        exit_status: bool,
    },
    /// Put this host's policy in force on its interfaces and keep it there (the service).
    Run {
        /// Policy source.
        #[command(flatten)]
        policy: PolicyArgs,
        /// Host selection.
        #[command(flatten)]
        host: HostArgs,
        /// Pins and state.
        #[command(flatten)]
        state: StateArgs,
        /// Interfaces to protect (repeatable; default: the site's [host] interfaces, else every
        /// interface with a global address).
        #[arg(long = "iface", value_name = "IF")]
        ifaces: Vec<String>,
        /// Override the site's mode.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9742); off by default.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Write audit records here instead of the site's `[audit] path`.
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
        /// Group (name or id) whose members may run `status` and `audit`: the state, counter
        /// samples and audit log become readable to it; the maps stay root's.
        #[arg(long, value_name = "GROUP")]
        status_group: Option<String>,
        /// Have the XDP program report frames it cannot parse, in this log (aya-log).
        #[arg(long)]
        datapath_log: bool,
        /// Load the single-buffer XDP program, as on a kernel without multi-buffer XDP (before
        /// 5.18): for a driver whose multi-buffer support misbehaves. Interfaces whose MTU
        /// needs multi-buffer frames are then protected in generic mode (slower; logged).
        #[arg(long)]
        no_xdp_frags: bool,
        /// Directory that survives reboots, for the last good policy: enforced at start when
        /// the site file cannot be (`StateDirectory=portguard`).
        #[arg(long, value_name = "DIR", default_value = crate::paths::STATE_DIR, env = "PORTGUARD_STATE_DIR")]
        state_dir: PathBuf,
    },
    /// Ask the running daemon to reload the site policy, and report the outcome.
    Reload {
        /// Pins and state.
        #[command(flatten)]
        state: StateArgs,
        /// Seconds to wait for the daemon to answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Reload the site file on trial: it reverts to the current policy unless `portguard confirm`
    /// follows in time (so a policy that cuts off the administrator undoes itself).
    Apply {
        /// Pins and state.
        #[command(flatten)]
        state: StateArgs,
        /// Time to confirm, e.g. 60s, 5m.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_secs)]
        confirm_within: u64,
        /// Apply even if the policy would refuse new SSH connections like the one this runs in.
        #[arg(long)]
        force: bool,
    },
    /// Keep the policy on trial.
    Confirm {
        /// Pins and state.
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show what is in force: interfaces, policy, per-rule and per-reason counters.
    Status {
        /// Pins and state.
        #[command(flatten)]
        state: StateArgs,
        /// Output as JSON (stable field names).
        #[arg(long)]
        json: bool,
        /// Refresh every SECS seconds (default 2) with rates over the interval.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// Stop the daemon if it runs, detach from every interface and remove every pin.
    Detach {
        /// Pins and state.
        #[command(flatten)]
        state: StateArgs,
    },
    /// Try each kernel feature portguard uses and say what runs without the missing ones
    /// (exit 0: enforcement works, perhaps degraded; 1: it cannot; 2: not allowed to ask).
    Doctor {
        /// Output as JSON (stable field names).
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    #[command(hide = true)]
    Man,
    /// Show the denied (and would-deny) flows of the audit log.
    Audit(AuditArgs),
    /// Propose site changes from the audit records of a rollout (in audit mode, say) and the
    /// rule counters: sources to map into roles, features to switch on (each tried by replaying
    /// the refused flows through the classifier), rules without traffic. Prints a reviewable
    /// diff of the site file; changes nothing.
    Suggest(SuggestArgs),
    /// Build a site in network namespaces on this machine, protect one host of it with the real
    /// daemon, send a flow for every rule in force and compare what happens with `explain`
    /// (needs root; removes everything at the end unless --keep).
    Lab(LabArgs),
}

/// `portguard audit`: which records of the audit log to show, and how.
#[derive(Debug, Args, Clone)]
pub struct AuditArgs {
    /// Policy source: the log is the site file's `[audit] path` unless `--log` is given.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The audit log to read (its rotated files `FILE.1`, `FILE.2`... too).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Records from this long ago (90s, 10m, 2h, 1d) or this time (RFC 3339) on.
    #[arg(long, value_name = "T", default_value = "1h")]
    pub since: crate::audit::query::Since,
    /// Only flows from this address or network.
    #[arg(long, value_name = "CIDR", value_parser = crate::audit::query::parse_net)]
    pub src: Option<ipnet::IpNet>,
    /// Only flows to this destination port.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Print records as JSON lines (with `--top`: one JSON object).
    #[arg(long)]
    pub json: bool,
    /// Show the N sources and the N ports most refused instead of the flows.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Keep printing records as the daemon writes them, across rotations, until interrupted.
    #[arg(long, conflicts_with = "top")]
    pub follow: bool,
}

/// `portguard suggest`: which records, which site, which daemon.
#[derive(Debug, Args, Clone)]
pub struct SuggestArgs {
    /// Policy source: the site file the diff is for (and its `[audit] path`).
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Host selection (default: the roles the daemon runs with).
    #[command(flatten)]
    pub host: HostArgs,
    /// The daemon's state and counter samples (rule last-hit times).
    #[command(flatten)]
    pub state: StateArgs,
    /// The audit log to read (its rotated files too); default: the site file's `[audit] path`.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The window: records from this long ago (90s, 10m, 2h, 3d, 1w) or this time (RFC 3339)
    /// on; rules without a hit since then are listed.
    #[arg(long, value_name = "T", default_value = "7d")]
    pub since: crate::audit::query::Since,
    /// Print the findings and the diff as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `90`, `90s`, `5m`, `1h` -> seconds.
fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let (num, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}`: expected a duration such as 60s or 5m"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("`{text}`: unit must be s, m or h")),
    };
    n.checked_mul(scale)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("`{text}`: must be at least 1s"))
}

/// `portguard lab`: where the site comes from and what to keep.
#[derive(Debug, Args, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LabArgs {
    /// `down`: take a kept lab down.
    #[command(subcommand)]
    pub action: Option<LabAction>,
    /// Site file to rehearse (default: the built-in policies/examples/lab.toml).
    #[arg(long, value_name = "FILE")]
    pub site: Option<PathBuf>,
    /// Directory of product files (default: the installed ones, else ./policies, else the
    /// copies built into this binary).
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Leave the lab up at the end (`portguard lab down` removes it).
    #[arg(long)]
    pub keep: bool,
    /// Also draw the machines and the flows tried, coloured by verdict, into this SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also write every row of the table as JSON into this file (for scripts and tests).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Prefix of the lab's names: namespaces `<prefix>-*`, pins /sys/fs/bpf/<prefix>.
    #[arg(long, value_name = "NAME", default_value = crate::lab::DEFAULT_PREFIX)]
    pub prefix: String,
}

/// What `portguard lab` can do besides running.
#[derive(Debug, Subcommand, Clone)]
pub enum LabAction {
    /// Remove a lab left up with --keep (or by a crash): its namespaces, daemon, pins, files.
    Down {
        /// Prefix of the lab's names.
        #[arg(long, value_name = "NAME", default_value = crate::lab::DEFAULT_PREFIX)]
        prefix: String,
    },
}
