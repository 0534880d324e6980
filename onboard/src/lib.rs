//! Onboard image triage for planetary rovers.
//!
//! The decision core ([`decide`]) is `no_std` and allocation-free: it works on caller-owned
//! slices and fixed-capacity containers. The `std` feature adds the model bundle format
//! ([`bundle`]), image decoding and preprocessing ([`preprocess`]) and evaluation metrics
//! ([`metrics`]); the `tract` feature adds the ONNX runtime layer ([`runtime`], [`pipeline`]).
#![cfg_attr(not(feature = "std"), no_std)]

pub mod decide;

#[cfg(feature = "std")]
pub mod adapt;
#[cfg(feature = "std")]
pub mod analysis;
#[cfg(feature = "std")]
pub mod bundle;
#[cfg(feature = "std")]
pub mod downlink;
#[cfg(feature = "std")]
pub mod labels;
#[cfg(feature = "std")]
pub mod metrics;
#[cfg(feature = "std")]
pub mod preprocess;
#[cfg(feature = "std")]
pub mod render;

#[cfg(feature = "tract")]
pub mod convops;
#[cfg(feature = "std")]
pub mod journal;
#[cfg(feature = "tract")]
pub mod pipeline;
#[cfg(feature = "tract")]
pub mod runtime;
#[cfg(feature = "tract")]
pub mod tract_isa;
#[cfg(feature = "tract")]
pub mod triage;
