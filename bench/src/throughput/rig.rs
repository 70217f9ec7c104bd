//! The measuring rig of the throughput benchmark: the live-frames generator thread and one
//! measured interval of a receiver, with the CPU time and counters it is judged by.

use std::{
    os::fd::OwnedFd,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    },
    thread,
    time::Instant,
};

use aya::programs::{XdpMode, xdp::XdpLinkId};
use integration_tests::net::enter;
use portguard::ebpf::{Datapath, PROGRAM};

use super::{
    CPU, Counted, GEN_BATCH, GEN_CALL, GEN_REPEAT, Generator as Gen, INTERVAL, Receiver, Traffic,
    WARMUP,
    nft::{nft, nft_dropped, nft_ruleset},
    peers::{XdpBench, XdpFilter},
};
use crate::sys;

/// (`rx_packets`, `rx_dropped`) of `dev` from /proc/thread-self/net/dev: the calling thread's
/// namespace, read without spawning a process.
fn dev_stats(dev: &str) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev");
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
        .unwrap_or_else(|| panic!("{dev} not in /proc/thread-self/net/dev"));
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().expect("counter"))
        .collect();
    (f[1], f[3])
}

/// Nanoseconds a thread has run (first field of /proc/<pid>/schedstat).
fn run_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The `ksoftirqd` thread of `cpu` (a child of kthreadd).
pub(super) fn ksoftirqd(cpu: usize) -> Option<i32> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim_end()
                == want
                && std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l == "PPid:\t2")
        })
}

/// One measured interval.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sample {
    /// Packets the receiver handled per wall-clock second.
    pub(super) pps: f64,
    /// Frames the generator sent per wall-clock second.
    pub(super) offered: f64,
    /// Frames per second lost before the receiver (its queue full), per `rx_dropped`.
    pub(super) lost: f64,
    /// CPU ns (generator thread + ksoftirqd of its CPU) per packet handled, or per frame sent
    /// when nothing receives.
    pub(super) cpu_ns: f64,
    /// CPU time / wall time of the generator (and ksoftirqd), 0..1: below 1 while the
    /// machine's other users hold the CPU, or while a call waits for an RCU grace period.
    pub(super) share: f64,
    /// What the filter itself counted / packets handled (1.0 = every packet accounted for).
    pub(super) counted: f64,
}

/// The generator: a thread in the sender's namespace, pinned to [`CPU`], running live frames
/// until told to stop.
struct Generator {
    stop: Arc<AtomicBool>,
    /// Frames sent, updated after each call.
    sent: Arc<AtomicU64>,
    /// The generator thread's CPU time in those calls.
    cpu: Arc<AtomicU64>,
    tid: Arc<AtomicI32>,
    /// Taken by `finish`; still there on drop only when a panic unwinds past the generator.
    handle: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Generator {
    /// Stop the generator even when the measurement panics: its thread holds the sender's
    /// namespace alive, and the benchmark's namespaces must go when it ends.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Generator {
    fn start(ns_path: String, prog: Arc<OwnedFd>, frame: Vec<u8>, ifindex: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let cpu = Arc::new(AtomicU64::new(0));
        let tid = Arc::new(AtomicI32::new(0));
        let (s, n, c, t) = (stop.clone(), sent.clone(), cpu.clone(), tid.clone());
        let handle = thread::spawn(move || {
            enter(&ns_path);
            sys::pin_to_cpu(0, CPU)?;
            // SAFETY: plain syscall.
            t.store(unsafe { libc::gettid() }, Ordering::Release);
            let mut repeat = GEN_REPEAT;
            while !s.load(Ordering::Relaxed) {
                let (wall, cpu0) = (Instant::now(), sys::thread_cpu_ns());
                sys::live_frames(&prog, &frame, ifindex, repeat, GEN_BATCH)?;
                c.fetch_add(sys::thread_cpu_ns() - cpu0, Ordering::Relaxed);
                n.fetch_add(u64::from(repeat), Ordering::Relaxed);
                let scale = GEN_CALL.as_secs_f64() / wall.elapsed().as_secs_f64().max(1e-6);
                #[expect(clippy::cast_sign_loss, reason = "clamped to 1e4..=1e8 first")]
                let next = (f64::from(repeat) * scale).clamp(1e4, 1e8) as u32;
                repeat = next;
            }
            Ok(())
        });
        Generator {
            stop,
            sent,
            cpu,
            tid,
            handle: Some(handle),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("generator thread")
            .expect("BPF_PROG_TEST_RUN in live-frames mode (needs Linux 5.18)");
    }
}

/// Everything the receiver-side thread needs.
pub(super) struct Rig {
    pub(super) a_path: String,
    pub(super) b_ns: String,
    pub(super) b_if: String,
    pub(super) a_ifindex: u32,
    pub(super) softirqd: Option<i32>,
    /// The one-flow generator program.
    pub(super) one_flow: Arc<OwnedFd>,
    /// The many-source generator program.
    pub(super) spray: Arc<OwnedFd>,
    pub(super) nft_rules: Vec<String>,
}

/// The peer programs' state across measurements.
pub(super) struct Peers {
    /// xdp-filter, when it can be measured here.
    pub(super) xdp_filter: Option<XdpFilter>,
    /// Where xdp-bench's user-space side runs.
    pub(super) other_cpu: usize,
}

/// What `configure` set up, for `unconfigure` to take down.
enum Setup {
    Xdp(usize, XdpLinkId),
    XdpBench(XdpBench),
    Other,
}

impl Rig {
    fn configure(&self, dps: &mut [Datapath], peers: &mut Peers, r: Receiver) -> Setup {
        if let Some((i, name)) = r.xdp() {
            let id = dps[i]
                .load_program(name)
                .expect("program")
                .attach(&self.b_if, XdpMode::Driver)
                .expect("attach to the receiver veth (native mode)");
            return Setup::Xdp(i, id);
        }
        match r {
            Receiver::XdpFilter => {
                peers
                    .xdp_filter
                    .as_mut()
                    .expect("xdp-filter measured only when available")
                    .load();
                Setup::Other
            }
            Receiver::XdpBenchDrop => {
                Setup::XdpBench(XdpBench::start(&self.b_ns, &self.b_if, peers.other_cpu))
            }
            _ if r.nft() => {
                nft(
                    &self.b_ns,
                    &["-f", "-"],
                    &nft_ruleset(r, &self.b_if, &self.nft_rules),
                );
                Setup::Other
            }
            _ => {
                self.gro(false);
                Setup::Other
            }
        }
    }

    fn unconfigure(&self, dps: &mut [Datapath], peers: &mut Peers, r: Receiver, setup: Setup) {
        match (setup, r.xdp()) {
            (Setup::Xdp(i, id), Some((_, name))) => dps[i]
                .load_program(name)
                .expect("program")
                .detach(id)
                .expect("detach"),
            // Dropping it stops it and waits until its program is off the interface.
            (Setup::XdpBench(bench), _) => drop(bench),
            _ if r == Receiver::XdpFilter => peers
                .xdp_filter
                .as_mut()
                .expect("xdp-filter measured only when available")
                .unload(),
            _ if r.nft() => {
                nft(&self.b_ns, &["delete", "table", "inet", "pgbench"], "");
            }
            _ => self.gro(true),
        }
    }

    /// GRO on gives the veth a NAPI context with no XDP program attached, so the nftables runs
    /// receive the generator's frames the same way the XDP runs do; off (and no program) takes
    /// it away.
    fn gro(&self, on: bool) {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.b_ns, "ethtool", "-K", &self.b_if, "gro",
            ])
            .arg(if on { "on" } else { "off" })
            .output()
            .expect("run ethtool");
        assert!(
            out.status.success(),
            "ethtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Measure one receiver on one traffic. Runs on a thread inside the receiver namespace.
    pub(super) fn measure(
        &self,
        dps: &mut [Datapath],
        peers: &mut Peers,
        r: Receiver,
        t: &Traffic,
    ) -> Sample {
        let setup = self.configure(dps, peers, r);
        let counted = |dps: &[Datapath]| -> u64 {
            if r.nft() {
                return nft_dropped(&self.b_ns);
            }
            let Some((i, PROGRAM)) = r.xdp() else {
                return 0;
            };
            let reasons = dps[i].reason_counters().expect("counters");
            t.counted_by
                .iter()
                .map(|c| match *c {
                    Counted::Reason(reason) => reasons
                        .iter()
                        .find(|(x, _)| *x == reason)
                        .map_or(0, |(_, c)| c.packets),
                    Counted::Rule(slot) => dps[i].rule_counters(slot).expect("counters").packets,
                })
                .sum()
        };
        let program = match t.generator {
            Gen::OneFlow => self.one_flow.clone(),
            Gen::Spray => self.spray.clone(),
        };
        let generator = Generator::start(
            self.a_path.clone(),
            program,
            t.frame.clone(),
            self.a_ifindex,
        );
        thread::sleep(WARMUP);
        let tid = generator.tid.load(Ordering::Acquire);
        assert_ne!(
            tid, 0,
            "the generator did not start (live frames need Linux 5.18 and root)"
        );
        let snap = |dps: &[Datapath]| {
            let at = Instant::now();
            let (rx, lost) = dev_stats(&self.b_if);
            let cpu = run_ns(tid) + self.softirqd.map_or(0, run_ns);
            let sent = generator.sent.load(Ordering::Relaxed);
            let gen_cpu = generator.cpu.load(Ordering::Relaxed);
            (at, rx, lost, cpu, sent, counted(dps), gen_cpu)
        };
        let s0 = snap(dps);
        thread::sleep(INTERVAL);
        let s1 = snap(dps);
        generator.finish();
        self.unconfigure(dps, peers, r, setup);
        let dt = (s1.0 - s0.0).as_secs_f64();
        let rx = (s1.1 - s0.1) as f64;
        let sent = (s1.4 - s0.4) as f64;
        let cpu = (s1.3 - s0.3) as f64;
        if r == Receiver::Refused {
            // A stray frame of the stack's own (an ARP or neighbour solicitation from the
            // peer) may arrive through the regular path; millions of the generator's may not.
            assert!(
                rx <= 10.0,
                "a veth without NAPI received {rx} frames of {sent} sent"
            );
        }
        // portguard counts every packet on a rule or reason; nftables' final rule counts what
        // it drops. The limits count nothing, nor do nftables' accept rules, nor the peers
        // here.
        let counted = if r.xdp().is_some_and(|(_, p)| p == PROGRAM)
            || (r.nft() && t.limit == Receiver::XdpDrop && t.key == "drop")
        {
            (s1.5 - s0.5) as f64 / rx
        } else {
            f64::NAN
        };
        Sample {
            pps: rx / dt,
            offered: sent / dt,
            lost: (s1.2 - s0.2) as f64 / dt,
            // Nothing is received without a receiver: the cost per frame sent, from the
            // generator's own accounting of whole calls.
            cpu_ns: if r == Receiver::Refused {
                (s1.6 - s0.6) as f64 / sent
            } else {
                cpu / rx
            },
            share: cpu / 1e9 / dt,
            counted,
        }
    }
}
