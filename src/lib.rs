pub use gn_module;
pub use models;
