//! Network namespaces and veth pairs for attach-level tests, torn down on drop.

use std::{fs::File, net::IpAddr, os::fd::AsRawFd, process::Command, thread};

use crate::unique;

/// Run `ip` with these arguments; panics with the command and its error output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop (with every device inside it).
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// A new namespace with loopback up.
    #[must_use]
    pub fn new() -> Self {
        let name = unique("pgns");
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Run a command inside the namespace, panicking on failure.
    pub fn exec(&self, cmd: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "in {}: {}: {}",
            self.name,
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run a command inside the namespace; its output, whatever the exit status.
    #[must_use]
    pub fn output(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// Run `f` on a thread that has entered this namespace (sockets it opens live there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }

    /// Spawn `f` on a thread inside this namespace without waiting.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            enter(&path);
            f()
        })
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Move the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let f = File::open(path).expect("open netns");
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Two namespaces joined by a veth pair, with addresses: the usual test topology.
/// `a` is the peer ("client"), `b` the protected host whose veth gets the program.
#[derive(Debug)]
pub struct Pair {
    /// The client side.
    pub a: Netns,
    /// The protected side.
    pub b: Netns,
    /// Interface name in `a`.
    pub a_if: String,
    /// Interface name in `b`.
    pub b_if: String,
    /// IPv4 address of `a`.
    pub a4: IpAddr,
    /// IPv4 address of `b`.
    pub b4: IpAddr,
    /// IPv6 address of `a`.
    pub a6: IpAddr,
    /// IPv6 address of `b`.
    pub b6: IpAddr,
}

impl Pair {
    /// A pair with 198.18.<n>.1/24 (a) and .2 (b), 2001:db8:<n>::1/64 and ::2, MTU `mtu`.
    #[must_use]
    pub fn new(subnet: u8, mtu: u32) -> Self {
        let a = Netns::new();
        let b = Netns::new();
        let a_if = unique("pga");
        let b_if = unique("pgb");
        ip(&[
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ]);
        let mtu = mtu.to_string();
        for (ns, dev, last) in [(&a, &a_if, 1), (&b, &b_if, 2)] {
            ns.exec(&["ip", "link", "set", dev, "mtu", &mtu, "up"]);
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("198.18.{subnet}.{last}/24"),
                "dev",
                dev,
            ]);
            ns.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("2001:db8:{subnet}::{last}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        Pair {
            a,
            b,
            a_if,
            b_if,
            a4: format!("198.18.{subnet}.1").parse().expect("addr"),
            b4: format!("198.18.{subnet}.2").parse().expect("addr"),
            a6: format!("2001:db8:{subnet}::1").parse().expect("addr"),
            b6: format!("2001:db8:{subnet}::2").parse().expect("addr"),
        }
    }
}
