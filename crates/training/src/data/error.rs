//! [`DataError`].

use std::path::PathBuf;

/// Why data could not be opened.
#[derive(Debug, Clone, PartialEq)]
pub enum DataError {
    /// A file or directory is missing or cannot be read.
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong, and what was expected there.
        message: String,
    },
    /// A file's content is not what the format says (truncated, corrupt, bad label).
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what was expected.
        message: String,
    },
    /// The options do not describe a dataset.
    Usage(String),
    /// An item could not be produced.
    Dataset(String),
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataError::Io { path, message } => write!(f, "{}: {message}", path.display()),
            DataError::Format { path, message } => write!(f, "{}: {message}", path.display()),
            DataError::Usage(message) | DataError::Dataset(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for DataError {}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        DataError::Io {
            path: path.into(),
            message: err.to_string(),
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
