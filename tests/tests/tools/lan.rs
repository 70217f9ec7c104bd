//! The site under attack: a protected RHV host and the machines around it on one LAN (a bridge
//! in a namespace of its own), the site file that names them, what `portguard compile --json`
//! opens to each address, and tools run in a namespace under a time limit.

use std::{
    collections::BTreeSet,
    io::Read as _,
    net::{IpAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use integration_tests::{
    daemon::{binary, policies_dir},
    net::{Netns, add_addrs, ip, test_addrs},
    unique,
};
use ipnet::IpNet;
use serde_json::Value;

// Where each machine sits on the LAN: `198.18.<subnet>.<n>` and `2001:db8:<subnet>::<n>`.

/// The protected RHV host (runs `portguard run`).
pub(super) const HOST: u8 = 2;
/// Another RHV host: Geneve, libvirt TLS, migration and VDSM are open to it.
pub(super) const OTHER_HOST: u8 = 3;
/// The RHV Manager: SSH, VDSM and the image I/O daemon are open to it.
pub(super) const MANAGER: u8 = 10;
/// The Veeam backup server and worker (roles only, no machine).
const BACKUP_SERVER: u8 = 30;
const WORKER: u8 = 31;
/// Portal and console clients (a role only): the console range 5900-6923 is theirs alone.
const PORTAL_CLIENT: u8 = 40;
/// In no role at all.
pub(super) const OUTSIDER: u8 = 99;

/// A machine on the LAN: its namespace, interface and addresses.
#[derive(Debug)]
pub(super) struct Machine {
    pub(super) ns: Netns,
    pub(super) ifname: String,
    pub(super) v4: IpAddr,
    pub(super) v6: IpAddr,
}

impl Machine {
    /// Its address of the family of `like`.
    pub(super) fn addr_like(&self, like: IpAddr) -> IpAddr {
        if like.is_ipv4() { self.v4 } else { self.v6 }
    }

    /// The MAC address of its interface, as `aa:bb:..`.
    pub(super) fn mac(&self) -> String {
        self.ns
            .mac(&self.ifname)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// A switch (a Linux bridge in a namespace of its own) with the protected host plugged in;
/// [`Lan::machine`] plugs in more. Every namespace goes when its owner is dropped.
#[derive(Debug)]
pub(super) struct Lan {
    /// `198.18.<subnet>.0/24`, `2001:db8:<subnet>::/64`.
    pub(super) subnet: u8,
    /// The protected host; the program goes on `host.ifname`.
    pub(super) host: Machine,
    bridge: String,
    switch: Netns,
}

impl Lan {
    pub(super) fn new(subnet: u8) -> Self {
        let switch = Netns::new();
        let bridge = unique("pgsw");
        // No multicast snooping: neighbour discovery reaches every port without a querier.
        switch.exec(&[
            "ip",
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        switch.exec(&["ip", "link", "set", &bridge, "up"]);
        let host = plug(&switch, &bridge, subnet, HOST);
        Lan {
            subnet,
            host,
            bridge,
            switch,
        }
    }

    /// A new machine with address `.last` on the LAN.
    pub(super) fn machine(&self, last: u8) -> Machine {
        plug(&self.switch, &self.bridge, self.subnet, last)
    }

    /// Address `.last` of the LAN (whether or not a machine has it).
    pub(super) fn addr4(&self, last: u8) -> IpAddr {
        test_addrs(self.subnet, last).0
    }

    /// The site file of this LAN, written into `dir`: an RHV host with the Veeam plug-in, OVN
    /// on, every role at its address of the plan above, the failsafe elsewhere.
    pub(super) fn site(&self, dir: &Path) -> PathBuf {
        let both = |last: u8| {
            let (a4, a6) = test_addrs(self.subnet, last);
            format!("\"{a4}/32\", \"{a6}/128\"")
        };
        let text = format!(
            r#"products = ["rhv", "veeam-ovirt"]
features = ["ovn"]
disabled_features = []
mode = "enforce"
acknowledged = ["veeam-19000-reverse"]

[roles]
"rhv.manager" = [{manager}]
"rhv.host" = [{host}, {other}]
"veeam.backup-server" = [{backup}]
"veeam.worker" = [{worker}]
"rhv.admin-portal-client" = [{portal}]
"rhv.vm-portal-client" = [{portal}]

[failsafe]
ssh_from = ["198.18.250.0/24"]

[host]
roles = ["rhv.host"]
interfaces = ["{ifname}"]
"#,
            manager = both(MANAGER),
            host = both(HOST),
            other = both(OTHER_HOST),
            backup = both(BACKUP_SERVER),
            worker = both(WORKER),
            portal = both(PORTAL_CLIENT),
            ifname = self.host.ifname,
        );
        let path = dir.join("site.toml");
        std::fs::write(&path, text).expect("write site file");
        path
    }
}

/// A namespace joined to the bridge by a veth pair, with `.last` addresses.
fn plug(switch: &Netns, bridge: &str, subnet: u8, last: u8) -> Machine {
    let ns = Netns::new();
    let ifname = unique("pgm");
    let port = unique("pgp");
    ip(&[
        "link",
        "add",
        &ifname,
        "netns",
        &ns.name,
        "type",
        "veth",
        "peer",
        "name",
        &port,
        "netns",
        &switch.name,
    ]);
    switch.exec(&["ip", "link", "set", &port, "master", bridge, "up"]);
    ns.exec(&["ip", "link", "set", &ifname, "up"]);
    let (v4, v6) = test_addrs(subnet, last);
    add_addrs(&ns, &ifname, v4, v6);
    Machine { ns, ifname, v4, v6 }
}

/// `portguard compile --json` of a site: the rules in force on the host.
#[derive(Debug)]
pub(super) struct Compiled {
    rules: Vec<Value>,
}

impl Compiled {
    pub(super) fn new(site: &Path) -> Self {
        let out = Command::new(binary())
            .arg("compile")
            .arg("--site")
            .arg(site)
            .arg("--policies")
            .arg(policies_dir())
            .arg("--json")
            .output()
            .expect("run portguard compile");
        assert!(
            out.status.success(),
            "compile: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("compile JSON");
        Compiled {
            rules: json["rules"].as_array().expect("rules").clone(),
        }
    }

    /// Every port of rules for `proto` whose sources hold `src` (`None`: any source).
    fn ports(&self, proto: &str, src: Option<IpAddr>) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        for rule in &self.rules {
            let protos = rule["protos"].as_array().expect("protos");
            if !protos.iter().any(|p| p == proto) {
                continue;
            }
            let covers = |s: &Value| {
                let net: IpNet = s.as_str().expect("source").parse().expect("prefix");
                src.is_none_or(|a| net.contains(&a))
            };
            if !rule["sources"]
                .as_array()
                .expect("sources")
                .iter()
                .any(covers)
            {
                continue;
            }
            for range in rule["matches"]["ports"].as_array().into_iter().flatten() {
                let (start, end) = (range["start"].as_u64(), range["end"].as_u64());
                let (start, end) = (start.expect("start"), end.expect("end"));
                ports.extend((start..=end).map(|p| u16::try_from(p).expect("port")));
            }
        }
        ports
    }

    /// The TCP ports the rules in force open to `src`: what a SYN scan from it must find.
    pub(super) fn tcp_open_to(&self, src: IpAddr) -> BTreeSet<u16> {
        self.ports("tcp", Some(src))
    }

    /// Every TCP port a rule opens to anyone.
    pub(super) fn tcp_ports(&self) -> BTreeSet<u16> {
        self.ports("tcp", None)
    }

    /// The UDP ports the rules in force open to `src`.
    pub(super) fn udp_open_to(&self, src: IpAddr) -> BTreeSet<u16> {
        self.ports("udp", Some(src))
    }
}

/// Listening TCP sockets in `ns` on `[::]:port` (both families) for every port. Nothing accepts:
/// the kernel answers a SYN with a SYN-ACK, which is all a scan looks for.
pub(super) fn tcp_listeners(ns: &Netns, ports: &BTreeSet<u16>) -> Vec<TcpListener> {
    let ports = ports.clone();
    ns.run(move || {
        ports
            .iter()
            .map(|p| {
                TcpListener::bind(("::", *p)).unwrap_or_else(|e| panic!("listen on tcp/{p}: {e}"))
            })
            .collect()
    })
}

/// A tool running in a namespace, killed (by its pid) if it outlives its time limit or the
/// test. `ip netns exec` enters the namespace and execs the tool, so the pid is the tool's.
#[derive(Debug)]
pub(super) struct Bounded {
    what: String,
    child: Option<Child>,
    deadline: Instant,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Bounded {
    pub(super) fn spawn(ns: &Netns, cmd: &[&str], limit: Duration) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", cmd.join(" ")));
        let drain = |mut r: Box<dyn std::io::Read + Send>| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
        Bounded {
            what: cmd.join(" "),
            child: Some(child),
            deadline: Instant::now() + limit,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Wait for it to end; past its time limit, kill it and panic with what it printed.
    pub(super) fn wait(mut self) -> Output {
        let mut child = self.child.take().expect("child");
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > self.deadline {
                let _ = child.kill();
                let _ = child.wait();
                let out = self
                    .stdout
                    .take()
                    .expect("stdout")
                    .join()
                    .unwrap_or_default();
                let err = self
                    .stderr
                    .take()
                    .expect("stderr")
                    .join()
                    .unwrap_or_default();
                panic!(
                    "{} still running at its time limit, killed:\n{}\n{}",
                    self.what,
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: self
                .stdout
                .take()
                .expect("stdout")
                .join()
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .expect("stderr")
                .join()
                .unwrap_or_default(),
        }
    }
}

impl Drop for Bounded {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `cmd` in `ns` to its end, at most `limit`.
pub(super) fn run_bounded(ns: &Netns, cmd: &[&str], limit: Duration) -> Output {
    Bounded::spawn(ns, cmd, limit).wait()
}
