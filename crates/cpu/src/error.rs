//! The one error both bridges return: the job did not produce a value.

use std::any::Any;

/// Why a job sent to a bridge produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The job panicked; the panic was caught and its message kept. The pool is unharmed.
    #[error("job panicked: {0}")]
    Panicked(String),
    /// The job never ran to the end: its runtime or pool shut down first.
    #[error("job cancelled before it finished")]
    Cancelled,
}

impl JobError {
    /// Builds [`JobError::Panicked`] from a payload of `catch_unwind` or a tokio `JoinError`.
    pub(crate) fn from_panic(payload: Box<dyn Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        Self::Panicked(message)
    }
}
