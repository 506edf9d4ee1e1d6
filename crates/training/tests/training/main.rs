//! The training crate's integration tests, in one binary: the data readers (CIFAR-10 fixtures
//! in `tests/fixtures/cifar10`, written by `tools/gen_cifar10_fixture.py`), training end to
//! end, resume and the crash test, the batch-size study, and what the comparisons with the
//! PyTorch mirror use (starting weights, the step profile).

mod comparison;
mod data_readers;
mod study;
mod train;
