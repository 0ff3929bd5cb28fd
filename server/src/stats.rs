//! Counters a server keeps and the snapshots it hands out: the atomics
//! stay private to the server, a reader gets plain numbers.

/// Declares a snapshot struct of `u64` counters (public, documented per
/// field) and the private atomics it is read from.
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $snapshot:ident / $atomics:ident {
            $( $(#[$field_meta:meta])* $field:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $snapshot {
            $( $(#[$field_meta])* pub $field: u64, )*
        }

        /// The live counters behind the snapshot.
        #[derive(Debug, Default)]
        pub(crate) struct $atomics {
            $( pub(crate) $field: std::sync::atomic::AtomicU64, )*
        }

        impl $atomics {
            /// The counters now.
            pub(crate) fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $( $field: self.$field.load(std::sync::atomic::Ordering::Relaxed), )*
                }
            }
        }
    };
}

pub(crate) use counters;
