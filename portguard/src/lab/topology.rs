//! The lab's network: namespaces, veth pairs, the switch and the host's bridge, addresses and
//! static neighbours. Everything lives in namespaces this module creates and removes; the root
//! namespace's devices, addresses and routes are never touched.
//!
//! ```text
//!   <prefix>-lan: bridge `switch`, one port per machine
//!     ├── <prefix>-host: eth1 (the protected NIC, XDP) ── br0 (host addresses) ── vnet0
//!     │                                                                            └── <prefix>-vm
//!     ├── <prefix>-outsider: lan0 (an address in no role)
//!     └── <prefix>-<role>: lan0 (an address of that role), one per source the flows need
//! ```
//!
//! Every address is on-link (198.18.0.0/15 and `2001:db8::/32` are the prefixes of the
//! addresses), so no router is needed, and every machine knows every other's MAC address
//! (permanent neighbour entries): no ARP or neighbour discovery runs during the flows, so the
//! counters a flow moves are the flow's own.

use std::{
    io::Write as _,
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
};

use super::plan::{HOST, Plan, VM, in_lab};
use super::{LabError, error::failed};

/// The bridge standing for the lab's switch, in the lan namespace.
const SWITCH: &str = "switch";
/// The host's bridge, carrying its addresses, with the protected NIC and the VM's port.
const HOST_BRIDGE: &str = "br0";
/// The host's bridge port facing the VM.
const VM_PORT: &str = "vnet0";
/// Every other machine's interface.
const LAN_IF: &str = "lan0";

/// Run `ip` with `args`; an error with its output if it fails.
pub fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(failed(
            "running ip(8) (is iproute2 installed? `cargo xtask setup` installs it)",
        ))?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Run `ip [-n ns] -batch -` with these command lines.
fn batch(ns: Option<&str>, lines: &[String]) -> Result<(), LabError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(failed(
            "running ip(8) (is iproute2 installed? `cargo xtask setup` installs it)",
        ))?;
    let text = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .map_err(failed("writing to ip -batch"))?;
    let out = child
        .wait_with_output()
        .map_err(failed("waiting for ip -batch"))?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!(
                "ip{} -batch (commands:\n{text})",
                ns.map(|n| format!(" -n {n}")).unwrap_or_default()
            ),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Names of the network namespaces that exist (`ip netns list`).
pub fn namespaces() -> Result<Vec<String>, LabError> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map_err(failed("running ip netns list"))?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: "ip netns list".to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The namespaces of the lab with this prefix (`<prefix>-...`).
pub fn lab_namespaces(prefix: &str) -> Result<Vec<String>, LabError> {
    let lead = format!("{prefix}-");
    Ok(namespaces()?
        .into_iter()
        .filter(|n| n.starts_with(&lead))
        .collect())
}

/// Delete a namespace (and with it every device inside); missing ones are fine.
pub fn delete_namespace(name: &str) -> Result<(), LabError> {
    if !std::path::Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    ip(&["netns", "del", name])
}

fn neighbours(plan: &Plan, me: usize, dev: &str) -> Vec<String> {
    plan.endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .flat_map(|(_, e)| {
            e.addrs().into_iter().map(move |a| {
                format!(
                    "neigh replace {a} lladdr {} dev {dev} nud permanent",
                    e.mac_text()
                )
            })
        })
        .collect()
}

fn addresses(e: &super::plan::Endpoint, dev: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = e.v4 {
        // A /15 makes all of 198.18.0.0/15 on-link.
        out.push(format!("addr add {a}/15 dev {dev}"));
    }
    if let Some(a) = e.v6 {
        // A /32 makes all of 2001:db8::/32 on-link; nodad: usable at once.
        out.push(format!("addr add {a}/32 dev {dev} nodad"));
    }
    out
}

/// Create every namespace and device of `plan`. `created` receives each namespace name before
/// it is created, so a failure half-way still lets the caller remove what exists.
pub fn build(plan: &Plan, created: &mut Vec<String>) -> Result<(), LabError> {
    for e in &plan.endpoints {
        for a in e.addrs() {
            // The one rule this module must never break, checked where devices are made.
            assert!(
                in_lab(a),
                "lab address {a} outside 198.18.0.0/15 and 2001:db8::/32"
            );
        }
    }
    let names = plan.namespaces();
    created.extend(names.iter().cloned());
    batch(
        None,
        &names
            .iter()
            .map(|n| format!("netns add {n}"))
            .collect::<Vec<_>>(),
    )?;
    // The switch and one cable per machine (the VM hangs off the host's bridge instead).
    let mut lan = vec![
        "link set lo up".to_owned(),
        format!("link add {SWITCH} type bridge"),
        format!("link set {SWITCH} up"),
    ];
    for (i, e) in plan.endpoints.iter().enumerate() {
        if i == VM {
            continue;
        }
        let port = format!("port{i}");
        let inside = if i == HOST {
            plan.iface.as_str()
        } else {
            LAN_IF
        };
        lan.extend([
            format!(
                "link add {port} type veth peer name {inside} netns {}",
                e.ns
            ),
            format!("link set {port} master {SWITCH}"),
            format!("link set {port} alias {}", e.ns),
            format!("link set {port} up"),
        ]);
    }
    batch(Some(&plan.lan_ns), &lan)?;
    // The protected host: the NIC and the VM's port in a bridge that carries its addresses.
    let host = &plan.endpoints[HOST];
    let vm = &plan.endpoints[VM];
    let mut lines = vec![
        "link set lo up".to_owned(),
        format!(
            "link add {HOST_BRIDGE} address {} type bridge",
            host.mac_text()
        ),
        format!("link set {} master {HOST_BRIDGE}", plan.iface),
        format!("link set {} up", plan.iface),
        format!(
            "link add {VM_PORT} type veth peer name {LAN_IF} netns {}",
            vm.ns
        ),
        format!("link set {VM_PORT} master {HOST_BRIDGE}"),
        format!("link set {VM_PORT} up"),
        format!("link set {HOST_BRIDGE} up"),
    ];
    lines.extend(addresses(host, HOST_BRIDGE));
    lines.extend(neighbours(plan, HOST, HOST_BRIDGE));
    batch(Some(&host.ns), &lines)?;
    // Every other machine, the VM included.
    for (i, e) in plan.endpoints.iter().enumerate().skip(1) {
        let mut lines = vec![
            "link set lo up".to_owned(),
            format!("link set {LAN_IF} address {}", e.mac_text()),
            format!("link set {LAN_IF} up"),
        ];
        lines.extend(addresses(e, LAN_IF));
        lines.extend(neighbours(plan, i, LAN_IF));
        batch(Some(&e.ns), &lines)?;
    }
    Ok(())
}

/// Run `f` on a thread that has entered network namespace `ns`; sockets it creates live there
/// (and stay there when handed back to other threads).
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    let path = std::path::Path::new("/run/netns").join(ns);
    let file = std::fs::File::open(&path).map_err(failed(format!("opening {}", path.display())))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd changes only the calling thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        drop(file);
        Ok(f())
    })
    .join()
    .map_err(|_| LabError::ThreadPanicked { ns: ns.to_owned() })?
    .map_err(failed(format!("entering namespace {ns}")))
}
