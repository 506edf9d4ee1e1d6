//! gn-module's integration tests, in one binary (one link per change): PyTorch parity fixtures,
//! f64 formulas (forward and backward, bounds derived from each dtype's rounding),
//! finite-difference gradients, fused kernels against the composite, a check that the fused
//! kernels really ran, errors at every public entry, properties and records, on every backend
//! compiled into the test build.

mod common;
mod dispatch;
mod errors;
mod f64_formulas;
mod fused_vs_composite;
mod gradcheck;
mod parity;
mod properties;
mod records;
mod reference;
