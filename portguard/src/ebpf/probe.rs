//! Running a frame through a program the kernel already has, found by its id: how the daemon's
//! self-test checks the program an interface actually runs (not a copy it loaded itself).
//! aya runs `BPF_PROG_TEST_RUN` only on programs it loaded or opened from a pin, so the two
//! commands are issued here.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// `BPF_PROG_TEST_RUN` (Linux 4.12).
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_PROG_GET_FD_BY_ID` (Linux 4.13).
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
/// Bytes of `union bpf_attr` these commands use (the kernel ignores the zeroed rest).
const ATTR_SIZE: usize = 128;

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No program with this id (it was unloaded), or no permission to open it.
    #[error("opening program {id}")]
    Open {
        /// The program id.
        id: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused to run the frame.
    #[error("running a frame through program {id}")]
    Run {
        /// The program id.
        id: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_SIZE]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised `union bpf_attr` of the size passed, alive for the
    // call; the fields set point at buffers alive for the call too.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_SIZE) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The XDP action program `id` returns for `frame` (run once, on loopback, as
/// `BPF_PROG_TEST_RUN` does without a context).
pub fn xdp_action(id: u32, frame: &[u8]) -> Result<u32, ProbeError> {
    let mut attr = [0u8; ATTR_SIZE];
    attr[0..4].copy_from_slice(&id.to_ne_bytes());
    let fd =
        bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map_err(|source| ProbeError::Open { id, source })?;
    // SAFETY: the kernel just returned this descriptor; it is ours to close.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // `attr.test`: prog_fd @0, retval @4, data_size_in @8, data_in @16, repeat @32.
    let mut attr = [0u8; ATTR_SIZE];
    attr[0..4].copy_from_slice(&fd.as_raw_fd().cast_unsigned().to_ne_bytes());
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&1u32.to_ne_bytes());
    bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(|source| ProbeError::Run { id, source })?;
    Ok(u32::from_ne_bytes([attr[4], attr[5], attr[6], attr[7]]))
}
