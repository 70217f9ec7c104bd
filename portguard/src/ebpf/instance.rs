//! The loaded program every interface shares, pinned with its policy maps in
//! `<pin dir>/programs/<program id>/`.
//!
//! A program is loaded (and verified) once per build of portguard, not once per policy: reloads
//! switch its tables ([`super::policy`]), and an interface that appears later is attached to the
//! pinned program at once, with nothing to load or verify first. The pins, not the daemon, keep
//! the program and its tables alive between daemon runs, so a restarted daemon (or one killed in
//! the middle of a step) finds exactly what is in force.

use std::path::{Path, PathBuf};

use aya::programs::{SchedClassifier, Xdp};
use aya_obj::programs::XdpAttachType;
use portguard_common::config::Config;

use super::{
    Buffers, Datapath, DatapathError, capacity_for,
    image::Image,
    policy::{PolicyError, PolicyMaps},
};

/// Directory of the pinned programs, under the pin directory.
pub const PROGRAMS_SUBDIR: &str = "programs";
/// Pin name of the XDP program in an instance directory.
const XDP_PIN: &str = "xdp";
/// Pin name of the egress recorder program.
const EGRESS_PIN: &str = "egress";
/// Prefix of an instance directory still being pinned: renamed to the program id once complete,
/// so a directory named by a number always holds a whole instance.
const PARTIAL_PREFIX: &str = "partial-";

/// Why an instance could not be created, found, opened or removed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The program could not be loaded.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Its policy maps could not be opened or written.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A program could not be pinned, opened from its pin, or asked its id.
    #[error("{what} {path}")]
    Program {
        /// What was being done.
        what: &'static str,
        /// The pin.
        path: PathBuf,
        /// Cause.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map could not be pinned.
    #[error("pinning {path}")]
    Pin {
        /// The pin.
        path: PathBuf,
        /// Cause.
        #[source]
        source: aya::pin::PinError,
    },
    /// A directory of pins could not be created, listed, renamed or removed.
    #[error("{what} {path}")]
    Dir {
        /// What was being done.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn dir_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstanceError {
    let path = path.to_owned();
    move |source| InstanceError::Dir { what, path, source }
}

/// The programs directory of `pin_dir`.
#[must_use]
pub fn programs_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(PROGRAMS_SUBDIR)
}

/// A pinned program and its policy maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Kernel id of the XDP program: what links report, and the directory's name.
    pub id: u32,
    /// The directory of its pins.
    pub dir: PathBuf,
}

impl Instance {
    /// Load this build's program with `image` live, with room for the policy to grow
    /// ([`capacity_for`]), and pin it, the egress recorder and the policy maps. The only step
    /// that runs the verifier.
    pub fn create(
        pin_dir: &Path,
        image: &Image,
        buffers: Buffers,
    ) -> Result<Instance, InstanceError> {
        let mut dp = Datapath::load_image_with(image, pin_dir, capacity_for(image), buffers)?;
        dp.egress()?;
        let prog_err = |what, path: &Path| {
            let path = path.to_owned();
            move |source| InstanceError::Program { what, path, source }
        };
        let id = dp
            .program()?
            .info()
            .map_err(prog_err("reading the id of", pin_dir))?
            .id();
        let programs = programs_dir(pin_dir);
        let partial = programs.join(format!("{PARTIAL_PREFIX}{id}"));
        std::fs::create_dir_all(&partial).map_err(dir_err("creating", &partial))?;
        dp.policy()
            .pin(&partial)
            .map_err(|(path, source)| InstanceError::Pin { path, source })?;
        let xdp_path = partial.join(XDP_PIN);
        dp.program()?
            .pin(&xdp_path)
            .map_err(|source| InstanceError::Pin {
                path: xdp_path.clone(),
                source,
            })?;
        let egress_path = partial.join(EGRESS_PIN);
        dp.egress()?
            .pin(&egress_path)
            .map_err(|source| InstanceError::Pin {
                path: egress_path.clone(),
                source,
            })?;
        let dir = programs.join(id.to_string());
        std::fs::rename(&partial, &dir).map_err(dir_err("renaming", &partial))?;
        // Dropping the loaded object closes this process's handles only: the pins hold the
        // programs and their maps.
        drop(dp);
        Ok(Instance { id, dir })
    }

    /// The complete instances pinned in `pin_dir`, and the directories of incomplete ones (a
    /// daemon killed while pinning), which hold nothing in force and may be removed.
    pub fn list(pin_dir: &Path) -> Result<(Vec<Instance>, Vec<PathBuf>), InstanceError> {
        let programs = programs_dir(pin_dir);
        let entries = match std::fs::read_dir(&programs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()));
            }
            Err(e) => return Err(dir_err("listing", &programs)(e)),
        };
        let mut complete = Vec::new();
        let mut partial = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.parse::<u32>() {
                Ok(id) => complete.push(Instance {
                    id,
                    dir: entry.path(),
                }),
                Err(_) => partial.push(entry.path()),
            }
        }
        complete.sort_by_key(|i| i.id);
        Ok((complete, partial))
    }

    /// The instance of program `id`, if one is pinned.
    pub fn find(pin_dir: &Path, id: u32) -> Result<Option<Instance>, InstanceError> {
        Ok(Self::list(pin_dir)?.0.into_iter().find(|i| i.id == id))
    }

    /// Its policy maps.
    pub fn policy(&self) -> Result<PolicyMaps, InstanceError> {
        Ok(PolicyMaps::from_pins(&self.dir)?)
    }

    /// What it holds: whether it is this build's program of kind `want` in this build's layout,
    /// and the config of the policy in force.
    pub fn summary(&self, want: Buffers) -> Result<Summary, InstanceError> {
        let policy = self.policy()?;
        let control = policy.control();
        Ok(Summary {
            ours: control.build == want.build_id()
                && control.layout == portguard_common::image::LAYOUT,
            config: policy.live_config(),
            half: policy.half(),
        })
    }

    /// The XDP program, from its pin.
    pub fn xdp(&self) -> Result<Xdp, InstanceError> {
        let path = self.dir.join(XDP_PIN);
        Xdp::from_pin(&path, XdpAttachType::Interface).map_err(|source| InstanceError::Program {
            what: "opening the pinned program",
            path,
            source,
        })
    }

    /// The egress recorder, from its pin.
    pub fn egress(&self) -> Result<SchedClassifier, InstanceError> {
        let path = self.dir.join(EGRESS_PIN);
        SchedClassifier::from_pin(&path).map_err(|source| InstanceError::Program {
            what: "opening the pinned program",
            path,
            source,
        })
    }

    /// Remove its pins. The kernel frees the program and its maps once no link runs it (the
    /// freeing happens in the kernel's own deferred work, not in this process or on the packet
    /// path).
    pub fn remove(&self) -> Result<(), InstanceError> {
        std::fs::remove_dir_all(&self.dir).map_err(dir_err("removing", &self.dir))
    }
}

/// What an instance holds, as its policy maps say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Whether it is this build's program (same object, same image layout).
    pub ours: bool,
    /// The config of its live generation (`policy_version` names the policy in force).
    pub config: Config,
    /// Chunks per generation it was loaded with.
    pub half: u32,
}
