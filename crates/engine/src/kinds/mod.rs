//! Job kinds: what a job runs. A kind is one module implementing [`JobKind`]
//! plus one line in [`builtin`]; everything around a run (the API, the store,
//! the queue, secrets, audit redaction, crash recovery) goes through this
//! trait and never names a kind.
//!
//! To the rest of Steward a spec is data (`JobSpec`: a kind name and its
//! fields). The kind gives the fields their meaning:
//! - **shape and rules**: [`JobKind::validate`], usually by reading the fields
//!   into its own typed spec with [`parse_fields`];
//! - **where secrets may be**: [`JobKind::secret_fields`], the one list that
//!   scanning for references, filling them in, masking their values in the
//!   output and redacting the audit log all walk (`kinds::fields`);
//! - **checks at save time** that need the world outside: [`JobKind::check`];
//! - **execution** to a status and the kind's own outcome data;
//! - **a handle** (process group, container id, upload id) recorded while a
//!   run executes through `ExecContext::hold`, and [`JobKind::reconcile`],
//!   given that handle after a crash.
//!
//! A kind's settings (the command sandbox, the HTTP clients) are its own,
//! given when it is built.

pub mod command;
pub mod fields;
pub mod http;

use crate::executor::{ExecContext, ExecResult};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use steward_domain::{JobSpec, RunId, ValidationError};

pub use fields::SecretField;

/// One kind of job. See the module documentation.
#[async_trait]
pub trait JobKind: Send + Sync + 'static {
    /// The `kind` a spec names (`[a-z][a-z0-9_]*`, at most 32).
    fn name(&self) -> &'static str;

    /// The JSON Schema of the spec's fields (without `kind`), for the API
    /// document; [`KindSchema::of`] derives it from a `utoipa::ToSchema` type.
    fn schema(&self) -> KindSchema;

    /// The fields that may hold `${secret:NAME}`.
    fn secret_fields(&self) -> &'static [SecretField];

    /// Shape and rules of the spec's fields, and the fields as they are
    /// stored: read into the kind's own type and written back
    /// ([`canonical`]), so defaults are filled in and a value has one
    /// spelling (saving the same job twice is then no change). Errors name
    /// the field within the spec (`argv[0]`); the caller adds `spec.`.
    fn validate(&self, spec: &JobSpec) -> Result<Fields, ValidationError>;

    /// Rules that need the world outside, checked when a job is saved (the
    /// spec is valid). None by default.
    async fn check(&self, _spec: &JobSpec) -> Result<(), ValidationError> {
        Ok(())
    }

    /// Runs one attempt of a valid spec whose secrets are filled in, within
    /// `ctx.timeout`, stopping when `ctx.cancel` fires. What it prints goes
    /// to `ctx.output`; what it holds outside Steward to `ctx.hold`.
    async fn execute(&self, spec: &JobSpec, ctx: &ExecContext) -> ExecResult;

    /// Whether [`JobKind::execute`] itself waits for `ctx.start_at` (a
    /// scheduled run is executed up to 1.5 s ahead of its instant), so
    /// that it can prepare its work first: the command kind makes and
    /// confines the process, which `exec`s at the instant. By default the
    /// queue waits for the instant before calling `execute`.
    fn prepares_ahead(&self) -> bool {
        false
    }

    /// At start, for a run the previous process left running: ends what the
    /// handle it recorded describes. Returns what was done, for the log.
    async fn reconcile(&self, _run: RunId, _handle: &Value) -> String {
        "nothing to reconcile".into()
    }
}

/// A kind's spec schema and the named schemas it refers to
/// (`#/components/schemas/...`), as JSON.
#[derive(Debug, Clone)]
pub struct KindSchema {
    pub schema: Value,
    pub components: Vec<(String, Value)>,
}

impl KindSchema {
    pub fn of<T: utoipa::ToSchema>() -> Self {
        let mut refs = Vec::new();
        T::schemas(&mut refs);
        Self {
            schema: serde_json::to_value(T::schema()).unwrap_or(Value::Null),
            components: refs
                .into_iter()
                .map(|(name, s)| (name, serde_json::to_value(s).unwrap_or(Value::Null)))
                .collect(),
        }
    }

    /// The schema of a whole spec of `kind`: the fields' object with a
    /// `kind` property naming it, required.
    pub fn with_kind(&self, kind: &str) -> Value {
        let mut s = self.schema.clone();
        if let Some(o) = s.as_object_mut() {
            let props = o
                .entry("properties")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(p) = props.as_object_mut() {
                let mut with = serde_json::Map::new();
                with.insert(
                    "kind".into(),
                    serde_json::json!({"type": "string", "enum": [kind]}),
                );
                with.extend(std::mem::take(p));
                *p = with;
            }
            let required = o.entry("required").or_insert_with(|| Value::Array(vec![]));
            if let Some(r) = required.as_array_mut() {
                r.insert(0, Value::String("kind".into()));
            }
        }
        s
    }
}

/// A spec's fields, as a JSON object.
pub type Fields = serde_json::Map<String, Value>;

/// A kind's typed spec written back as fields (see [`JobKind::validate`]).
pub fn canonical<T: serde::Serialize>(spec: &T) -> Result<Fields, ValidationError> {
    match serde_json::to_value(spec) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => Err(ValidationError::new("", "does not serialize as an object")),
    }
}

/// The spec's fields read into a kind's own type, strictly (unknown fields
/// refused if the type says so, no array in place of an object), errors
/// naming the field.
pub fn parse_fields<T: DeserializeOwned>(spec: &JobSpec) -> Result<T, ValidationError> {
    steward_domain::strict::from_value(&Value::Object(spec.fields()))
        .map_err(|e| ValidationError::new(e.field, e.message))
}

/// The kinds this Steward knows, by name.
#[derive(Clone)]
pub struct KindRegistry {
    kinds: BTreeMap<&'static str, Arc<dyn JobKind>>,
}

impl KindRegistry {
    /// A registry of `kinds`; a name given twice is a programming error.
    pub fn new(kinds: impl IntoIterator<Item = Arc<dyn JobKind>>) -> Self {
        let mut map = BTreeMap::new();
        for k in kinds {
            let name = k.name();
            assert!(
                JobSpec::new(name, Default::default()).is_ok(),
                "job kind name {name:?} is not a valid kind name"
            );
            assert!(
                map.insert(name, k).is_none(),
                "job kind {name:?} registered twice"
            );
        }
        Self { kinds: map }
    }

    /// The kind a spec names; an unknown one is a validation error naming
    /// the kinds there are.
    pub fn get(&self, name: &str) -> Result<&dyn JobKind, ValidationError> {
        self.kinds.get(name).map(|k| k.as_ref()).ok_or_else(|| {
            ValidationError::new(
                "spec.kind",
                format!(
                    "unknown kind {name:?}; this Steward runs {}",
                    self.kinds.keys().copied().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// The kind a spec names, to hand to a task of its own.
    pub fn shared(&self, name: &str) -> Option<Arc<dyn JobKind>> {
        self.kinds.get(name).cloned()
    }

    /// Every kind's whole spec schema (with `kind`), in name order, and the
    /// named schemas they refer to.
    pub fn schemas(&self) -> KindSchema {
        let mut specs = Vec::new();
        let mut components = Vec::new();
        for (name, kind) in &self.kinds {
            let s = kind.schema();
            specs.push(s.with_kind(name));
            components.extend(s.components);
        }
        KindSchema {
            schema: Value::Array(specs),
            components,
        }
    }

    /// The spec's rules (its kind's [`JobKind::validate`] and the shape of
    /// every secret reference, errors naming `spec.<field>`), and the spec
    /// as it is stored.
    pub fn validate(&self, spec: &JobSpec) -> Result<JobSpec, ValidationError> {
        let kind = self.get(spec.kind())?;
        let fields = kind.validate(spec).map_err(|e| e.within("spec"))?;
        let stored = JobSpec::new(spec.kind(), fields).map_err(|e| e.within("spec"))?;
        fields::references(kind, &stored)?;
        Ok(stored)
    }
}

/// The settings the built-in kinds are made from.
#[derive(Clone, Default)]
pub struct BuiltinSettings {
    pub command: crate::executor::command::CommandSettings,
    pub outbound: crate::outbound::OutboundPolicy,
}

/// The kinds every Steward has: one line each.
pub fn builtin(s: &BuiltinSettings) -> Result<Vec<Arc<dyn JobKind>>, reqwest::Error> {
    Ok(vec![
        Arc::new(command::CommandKind::new(s.command.clone())),
        Arc::new(http::HttpKind::new(s.outbound.clone())?),
    ])
}

/// The built-in kinds with default settings: for describing them (the API
/// document), not for running them.
pub fn builtin_registry() -> KindRegistry {
    KindRegistry::new(builtin(&BuiltinSettings::default()).unwrap_or_default())
}
