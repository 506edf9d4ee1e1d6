//! models' integration tests, in one binary: the ResNet family against PyTorch's weights and
//! logits (fixtures in `tests/fixtures/resnet`, written by `tools/gen_resnet_fixtures.py`), on
//! every backend compiled into the test build.

mod common;
mod resnet_weights;
