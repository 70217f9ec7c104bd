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

/// Transport protocol for `explain`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProtoArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
    /// ICMP (IPv4) or ICMPv6, by the address family.
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
}
