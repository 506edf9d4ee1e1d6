//! gn-module's integration tests, in one binary (one link per change): PyTorch parity fixtures,
//! finite-difference gradients, fused kernels against the composite reference, errors,
//! properties and records, on every backend compiled into the test build.

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
