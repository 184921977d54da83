//! Who may do what: modules, permissions, built-in roles, user names and the
//! password policy. The decision itself ([`PermissionSet::allows`]) is made
//! here, in one place; the web layer only asks.

use crate::error::ValidationError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The parts of Steward a permission can be granted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    Jobs,
    Runs,
    Secrets,
    Notifications,
    Users,
    Audit,
    Settings,
    /// The caller's own API tokens. Last, so stored permission bits keep their places.
    Tokens,
}

impl Module {
    pub const ALL: [Module; 8] = [
        Module::Jobs,
        Module::Runs,
        Module::Secrets,
        Module::Notifications,
        Module::Users,
        Module::Audit,
        Module::Settings,
        Module::Tokens,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Module::Jobs => "jobs",
            Module::Runs => "runs",
            Module::Secrets => "secrets",
            Module::Notifications => "notifications",
            Module::Users => "users",
            Module::Audit => "audit",
            Module::Settings => "settings",
            Module::Tokens => "tokens",
        }
    }

    fn index(self) -> u32 {
        self as u32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

/// `module:read` or `module:write`; write implies read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    pub module: Module,
    pub access: Access,
}

impl Permission {
    pub const fn new(module: Module, access: Access) -> Self {
        Self { module, access }
    }
    pub const fn read(module: Module) -> Self {
        Self::new(module, Access::Read)
    }
    pub const fn write(module: Module) -> Self {
        Self::new(module, Access::Write)
    }
    fn bit(self) -> u32 {
        1 << (self.module.index() * 2 + u32::from(self.access == Access::Write))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = match self.access {
            Access::Read => "read",
            Access::Write => "write",
        };
        write!(f, "{}:{access}", self.module.as_str())
    }
}

impl FromStr for Permission {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ValidationError::new(
                "",
                format!(
                    "unknown permission {s:?}: expected MODULE:read or MODULE:write, MODULE one of {}",
                    Module::ALL.map(Module::as_str).join(", ")
                ),
            )
        };
        let (m, a) = s.split_once(':').ok_or_else(bad)?;
        let module = Module::ALL
            .into_iter()
            .find(|x| x.as_str() == m)
            .ok_or_else(bad)?;
        let access = match a {
            "read" => Access::Read,
            "write" => Access::Write,
            _ => return Err(bad()),
        };
        Ok(Self { module, access })
    }
}

/// A set of permissions as a bit set. Always normalised: a write bit carries its
/// read bit, so containment checks are plain bit arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PermissionSet(u32);

impl PermissionSet {
    pub const EMPTY: Self = Self(0);

    pub fn all() -> Self {
        Module::ALL.into_iter().map(Permission::write).collect()
    }

    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
        if p.access == Access::Write {
            self.0 |= Permission::read(p.module).bit();
        }
    }

    /// The one authorisation decision of Steward.
    pub fn allows(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn intersection(self, other: Self) -> Self {
        // Both sides are normalised, so the intersection is too.
        Self(self.0 & other.0)
    }

    pub fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The minimal list: `jobs:write` rather than `jobs:read, jobs:write`.
    pub fn to_strings(self) -> Vec<String> {
        let mut out = Vec::new();
        for m in Module::ALL {
            if self.allows(Permission::write(m)) {
                out.push(Permission::write(m).to_string());
            } else if self.allows(Permission::read(m)) {
                out.push(Permission::read(m).to_string());
            }
        }
        out
    }

    pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Self, ValidationError> {
        let mut set = Self::EMPTY;
        for (i, s) in items.iter().enumerate() {
            set.insert(
                s.as_ref()
                    .parse::<Permission>()
                    .map_err(|e| e.within(&format!("[{i}]")))?,
            );
        }
        Ok(set)
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut s = Self::EMPTY;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

impl Serialize for PermissionSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_strings().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PermissionSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        Self::parse_list(&items).map_err(serde::de::Error::custom)
    }
}

/// The roles every Steward has. Custom roles are rows with their own sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinRole {
    Admin,
    Operator,
    Viewer,
}

impl BuiltinRole {
    pub const ALL: [BuiltinRole; 3] = [Self::Admin, Self::Operator, Self::Viewer];

    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }

    pub fn permissions(self) -> PermissionSet {
        use Module::*;
        match self {
            Self::Admin => PermissionSet::all(),
            // Runs and manages jobs, reads everything operational; no users,
            // no secrets' management, no settings, no audit.
            Self::Operator => [
                Permission::write(Jobs),
                Permission::write(Runs),
                Permission::read(Secrets),
                Permission::read(Notifications),
                Permission::write(Tokens),
            ]
            .into_iter()
            .collect(),
            Self::Viewer => [
                Permission::read(Jobs),
                Permission::read(Runs),
                Permission::read(Notifications),
                Permission::write(Tokens),
            ]
            .into_iter()
            .collect(),
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// A user or group name: 1 to 64 of letters, digits, `.`, `_`, `-`, `@`,
/// starting with a letter or digit. Compared case-insensitively by the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
        if s.is_empty() || s.len() > 64 {
            return Err(ValidationError::new("", "must be 1 to 64 characters"));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(ValidationError::new(
                "",
                "must start with a letter or digit",
            ));
        }
        if let Some(bad) = s.chars().find(|c| !ok_char(*c)) {
            return Err(ValidationError::new(
                "",
                format!("may contain only letters, digits, '.', '_', '-' and '@' (found {bad:?})"),
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<Username> for String {
    fn from(v: Username) -> String {
        v.0
    }
}
impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const PASSWORD_MIN_CHARS: usize = 12;
pub const PASSWORD_MAX_CHARS: usize = 1024;

/// The password policy: 12 to 1024 characters and a zxcvbn score of at least 3
/// ("safely unguessable"), with the user's own name counted as known to an
/// attacker. The message says why, never echoes the password.
pub fn check_password(password: &str, user_inputs: &[&str]) -> Result<(), ValidationError> {
    let chars = password.chars().count();
    if chars < PASSWORD_MIN_CHARS {
        return Err(ValidationError::new(
            "new_password",
            format!("must be at least {PASSWORD_MIN_CHARS} characters"),
        ));
    }
    if chars > PASSWORD_MAX_CHARS {
        return Err(ValidationError::new(
            "new_password",
            format!("must be at most {PASSWORD_MAX_CHARS} characters"),
        ));
    }
    // zxcvbn's cost grows with length; past 256 characters the score is
    // saturated anyway, so only a prefix is estimated.
    let probe: String = password.chars().take(256).collect();
    let estimate = zxcvbn::zxcvbn(&probe, user_inputs);
    if (estimate.score() as u8) < 3 {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .unwrap_or_else(|| "it would be guessed quickly".into());
        let hint = hint.trim_end_matches('.');
        return Err(ValidationError::new(
            "new_password",
            format!("is too weak ({hint}); use a longer passphrase of unrelated words"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_implies_read_and_sets_compare() {
        let mut s = PermissionSet::EMPTY;
        s.insert(Permission::write(Module::Jobs));
        assert!(s.allows(Permission::read(Module::Jobs)));
        assert!(!s.allows(Permission::read(Module::Runs)));
        assert!(BuiltinRole::Viewer
            .permissions()
            .is_subset_of(BuiltinRole::Operator.permissions()));
        assert!(!BuiltinRole::Operator
            .permissions()
            .is_subset_of(BuiltinRole::Viewer.permissions()));
        assert!(!BuiltinRole::Operator
            .permissions()
            .allows(Permission::read(Module::Users)));
        assert_eq!(s.to_strings(), vec!["jobs:write"]);
    }

    #[test]
    fn permission_strings_round_trip_and_bad_ones_are_named() {
        let set = PermissionSet::parse_list(&["runs:read", "audit:write"]).unwrap();
        assert_eq!(set.to_strings(), vec!["runs:read", "audit:write"]);
        let err = PermissionSet::parse_list(&["runs:read", "jobs:admin"]).unwrap_err();
        assert_eq!(err.field, "[1]");
        assert!(err.message.contains("jobs:admin"));
    }

    #[test]
    fn password_policy() {
        assert!(check_password("short", &[]).is_err());
        assert!(check_password("passwordpassword", &[]).is_err());
        assert!(check_password("alice-alice-alice", &["alice"]).is_err());
        assert!(check_password(&"x".repeat(1025), &[]).is_err());
        check_password("correct horse battery staple", &[]).unwrap();
        let err = check_password("aaaaaaaaaaaaaaaa", &[]).unwrap_err();
        assert!(!err.message.contains("aaaa"));
    }

    #[test]
    fn usernames() {
        Username::parse("alice.b@example").unwrap();
        assert!(Username::parse("").is_err());
        assert!(Username::parse("-x").is_err());
        assert!(Username::parse("a b").is_err());
    }
}
