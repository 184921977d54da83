//! Typed identifiers. A `JobId` cannot be passed where a `RunId` is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! typed_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Serialize,
            Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

typed_id!(JobId, "Identifier of a job, assigned by the store.");
typed_id!(
    RunId,
    "Identifier of a run, assigned by the store; increases with creation order."
);
typed_id!(UserId, "Identifier of a user account.");
typed_id!(
    SessionId,
    "Identifier of a sign-in session (not its secret)."
);
typed_id!(TokenId, "Identifier of an API token (not its secret).");
typed_id!(RoleId, "Identifier of a role.");
typed_id!(GroupId, "Identifier of a group of users.");
