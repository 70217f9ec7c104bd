//! The few kernel interfaces aya 0.14 does not wrap: a program loaded from raw instructions,
//! `BPF_PROG_TEST_RUN` in live-frames mode with an ingress interface, thread CPU time, CPU
//! affinity, and the kernel's own memory figure for a map.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

/// `BPF_PROG_LOAD` (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TEST_RUN`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_F_TEST_XDP_LIVE_FRAMES` (kernel 5.18): frames the program returns `XDP_TX` or
/// `XDP_REDIRECT` for are really transmitted, `XDP_PASS` ones really enter the stack.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// `XDP_TX`.
const XDP_TX: i32 = 3;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to the last field used here; the kernel
/// treats a shorter attribute as zero-filled.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_TEST_RUN` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
}

/// `struct xdp_md` as `BPF_PROG_TEST_RUN` reads it from `ctx_in`.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly laid out prefix of `union bpf_attr`, and its size is
    // passed with it; pointers inside it are valid for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Load the two-instruction XDP program `return XDP_TX;`: the traffic generator. Run in
/// live-frames mode with an interface as ingress, it transmits every frame out of that
/// interface. portguard's object has no such program, and a raw load keeps it out of the
/// product.
pub(crate) fn load_xdp_tx() -> io::Result<OwnedFd> {
    let insns = [
        // r0 = XDP_TX (BPF_ALU64 | BPF_MOV | BPF_K)
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: XDP_TX,
        },
        // exit (BPF_JMP | BPF_EXIT)
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    load_raw(&insns, b"pgbench")
}

/// Load an XDP program from raw instructions.
fn load_raw(insns: &[Insn], prog_name: &[u8]) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..prog_name.len()].copy_from_slice(prog_name);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Offsets in a frame of Ethernet, IPv4 without options and TCP that [`load_xdp_tx_spray`]
/// rewrites: the low 16 bits of the source address, the IPv4 identification, the TCP source
/// port.
const SPRAY_SRC_LO: i16 = 28;
const SPRAY_IP_ID: i16 = 18;
const SPRAY_SPORT: i16 = 34;
/// Sources the spray draws from: the low 12 bits of the address.
pub(crate) const SPRAY_SOURCES: u32 = 4096;
/// The IPv4 identification of the spray's frame template; each frame carries this minus the
/// random part of its source.
pub(crate) const SPRAY_TEMPLATE_ID: u16 = 0x8000;
/// The TCP source port of the template, likewise.
pub(crate) const SPRAY_TEMPLATE_SPORT: u16 = 45_000;

/// `BPF_ALU64 | op | BPF_K/X` and friends: the opcodes the spray program uses.
mod op {
    pub(super) const MOV_X: u8 = 0xbf;
    pub(super) const MOV_K: u8 = 0xb7;
    pub(super) const ADD_K: u8 = 0x07;
    pub(super) const SUB_X: u8 = 0x1f;
    pub(super) const AND_K: u8 = 0x57;
    pub(super) const LDX_W: u8 = 0x61;
    pub(super) const STX_H: u8 = 0x6b;
    pub(super) const JGT_X: u8 = 0x2d;
    pub(super) const BE: u8 = 0xdc;
    pub(super) const CALL: u8 = 0x85;
    pub(super) const EXIT: u8 = 0x95;
}

/// `bpf_get_prandom_u32`'s helper number.
const HELPER_PRANDOM: i32 = 7;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// Load the traffic generator for many sources: `XDP_TX` after giving each frame a random
/// source among [`SPRAY_SOURCES`] (the low 12 bits of the template's address, which must be 0).
/// The IPv4 identification and the TCP source port move by the same amount the other way, so
/// both checksums of the template stay right (ones' complement sums are unchanged) without
/// recomputing them: the stack and nftables see valid frames, and every frame is a new flow
/// (source address and port) for the socket lookup and the conntrack table.
pub(crate) fn load_xdp_tx_spray() -> io::Result<OwnedFd> {
    let be16 = |r| insn(op::BE, r, 0, 0, 16);
    let insns = [
        // r6 = ctx; r7 = data; r8 = data_end
        insn(op::MOV_X, 6, 1, 0, 0),
        insn(op::LDX_W, 7, 6, 0, 0),
        insn(op::LDX_W, 8, 6, 4, 0),
        // if data + 36 > data_end: send the frame as it is
        insn(op::MOV_X, 2, 7, 0, 0),
        insn(op::ADD_K, 2, 0, 0, 36),
        insn(op::JGT_X, 2, 8, 13, 0),
        // r0 = random & (SPRAY_SOURCES - 1)
        insn(op::CALL, 0, 0, 0, HELPER_PRANDOM),
        insn(op::AND_K, 0, 0, 0, (SPRAY_SOURCES - 1).cast_signed()),
        // source address, low 16 bits = r0
        insn(op::MOV_X, 1, 0, 0, 0),
        be16(1),
        insn(op::STX_H, 7, 1, SPRAY_SRC_LO, 0),
        // identification = template - r0
        insn(op::MOV_K, 1, 0, 0, i32::from(SPRAY_TEMPLATE_ID)),
        insn(op::SUB_X, 1, 0, 0, 0),
        be16(1),
        insn(op::STX_H, 7, 1, SPRAY_IP_ID, 0),
        // source port = template - r0
        insn(op::MOV_K, 1, 0, 0, i32::from(SPRAY_TEMPLATE_SPORT)),
        insn(op::SUB_X, 1, 0, 0, 0),
        be16(1),
        insn(op::STX_H, 7, 1, SPRAY_SPORT, 0),
        insn(op::MOV_K, 0, 0, 0, XDP_TX),
        insn(op::EXIT, 0, 0, 0, 0),
    ];
    load_raw(&insns, b"pgspray")
}

/// Run `prog` over `frame` `repeat` times in live-frames mode, as if received on `ifindex` (an
/// interface of the calling thread's network namespace), `batch` frames per NAPI-like batch.
pub(crate) fn live_frames(
    prog: &OwnedFd,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    batch: u32,
) -> io::Result<()> {
    let mut ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd().cast_unsigned(),
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: std::ptr::from_mut(&mut ctx) as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).map(|_| ())
}

/// CPU time of the calling thread in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`): unlike wall time,
/// it does not grow while another engineer's compiler holds the CPU.
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", io::Error::last_os_error());
    ts.tv_sec.cast_unsigned() * 1_000_000_000 + ts.tv_nsec.cast_unsigned()
}

/// Pin thread or process `tid` (0 = the calling thread) to one CPU.
pub(crate) fn pin_to_cpu(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Index of an interface in the calling thread's network namespace.
pub(crate) fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// The `memlock:` line of a map's fdinfo: since 6.4 the kernel's estimate of the memory the map
/// really uses (`bpf_map_memory_usage`), so an LPM trie counts its entries, not its capacity.
pub(crate) fn map_memlock(fd: RawFd) -> io::Result<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no memlock in fdinfo of fd {fd}")))
}

/// Open a TCP connection from `local` (bound first, which `std` cannot do) to `remote`.
pub(crate) fn connect_from(
    local: std::net::SocketAddrV4,
    remote: std::net::SocketAddrV4,
) -> io::Result<std::net::TcpStream> {
    let sa = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: plain socket syscalls on a descriptor owned by `fd` from creation on.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let l = sa(local);
        if libc::bind(raw, (&raw const l).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let r = sa(remote);
        if libc::connect(raw, (&raw const r).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(std::net::TcpStream::from(fd))
    }
}
