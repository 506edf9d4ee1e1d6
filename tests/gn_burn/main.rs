//! The facade's integration tests, in one binary: ResNet weights, the data readers, training,
//! resume and the batch-size study.

// The fixture loader and device list are gn-module's test helpers, shared rather than copied.
#[path = "../../crates/gn-module/tests/gn_module/common.rs"]
mod common;
mod data_readers;
mod resnet_weights;
mod study;
mod training;
