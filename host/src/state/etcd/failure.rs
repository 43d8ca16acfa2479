//! How an attempt at an etcd operation failed: worth another attempt within the deadline (the
//! transport broke, etcd had no leader), or not (refused credentials, a bad request).

use crate::state::StateError;

/// Whether etcd's answer says the credentials are missing, wrong or short of a permission
/// (etcd answers some of these as invalid arguments).
fn refused_credentials(message: &str) -> bool {
    [
        "etcdserver: authentication failed",
        "etcdserver: user name is empty",
        "etcdserver: invalid auth token",
        "etcdserver: permission denied",
        "etcdserver: user name not found",
    ]
    .iter()
    .any(|known| message.starts_with(known))
}

/// Why one attempt failed.
pub(super) enum Failure {
    /// Worth another attempt within the deadline.
    Transient(String),
    /// Retrying will not help.
    Final(StateError),
}

impl From<StateError> for Failure {
    fn from(e: StateError) -> Self {
        Failure::Final(e)
    }
}

impl From<etcd_client::Error> for Failure {
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        match e {
            E::GRpcStatus(status) if refused_credentials(status.message()) => {
                Failure::Final(StateError::Unavailable(format!(
                    "etcd refused the credentials: {}",
                    status.message()
                )))
            }
            E::GRpcStatus(status) => {
                let message = format!("{}: {}", status.code(), status.message());
                // gRPC codes by number (etcd-client does not re-export tonic's `Code`).
                match status.code() as i32 {
                    // Cancelled, Unknown, DeadlineExceeded, Aborted, Internal, Unavailable: the
                    // transport failed, or etcd could not serve now (no leader, a timeout).
                    1 | 2 | 4 | 10 | 13 | 14 => Failure::Transient(message),
                    // PermissionDenied, Unauthenticated.
                    7 | 16 => Failure::Final(StateError::Unavailable(format!(
                        "etcd refused the credentials: {message}"
                    ))),
                    _ => Failure::Final(StateError::Storage(format!("etcd: {message}"))),
                }
            }
            E::TransportError(e) => Failure::Transient(e.to_string()),
            E::IoError(e) => Failure::Transient(e.to_string()),
            other => Failure::Final(StateError::Storage(format!("etcd: {other}"))),
        }
    }
}
