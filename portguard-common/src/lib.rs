//! Types shared by the XDP program and the loader, and the one decision function both run.
//!
//! The kernel program parses a frame into a [`packet::Packet`], asks [`classify::classify`] for an
//! [`classify::Outcome`], counts it and acts on it. The loader's reference classifier
//! (`reference`, host only) parses the same bytes with a slice-based parser and calls the very
//! same `classify` over in-memory copies of the maps, so `explain`, the differential test and the
//! datapath cannot disagree on policy: only the two parsers can, and the differential test
//! compares exactly those.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

pub mod classify;
pub mod config;
pub mod event;
pub mod image;
pub mod maps;
pub mod packet;
pub mod reason;
#[cfg(feature = "user")]
pub mod reference;
#[cfg(feature = "user")]
pub mod tables;
