//! Clients' sessions: the settings a client changes, with `SET` or with Flight SQL's session
//! options, are its own. A session runs on the server's engine until its client changes a
//! setting, and on a copy of that engine's session from then on (same datasets, runner and
//! memory; settings of its own).
//!
//! A PostgreSQL connection is one session. A Flight SQL connection has one too, started
//! when its client first changes a setting; the client may carry it to other connections in
//! the `arrow_flight_session_id` cookie. A session lasts while a connection that used it is
//! open.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::Engine;
use crate::confine::check_setting;

/// The cookie a Flight SQL client carries its session in.
pub(super) const COOKIE: &str = "arrow_flight_session_id";

/// The settings behind Flight SQL's `catalog` and `schema` session options.
const CATALOG: &str = "datafusion.catalog.default_catalog";
const SCHEMA: &str = "datafusion.catalog.default_schema";

/// One client's session.
pub(super) struct Session {
    id: String,
    /// Who started it; only they may use it.
    user: Option<String>,
    /// The server's engine, which the session runs on until it changes a setting.
    base: Arc<Engine>,
    own: Mutex<Option<Arc<Engine>>>,
    /// Closed by its client: no request uses it from now on.
    closed: AtomicBool,
}

/// Why a session option was not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OptionError {
    /// No setting has that name.
    Name(String),
    /// The setting cannot take that value.
    Value(String),
    /// The setting cannot be changed on this server.
    Refused(String),
}

impl std::fmt::Display for OptionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionError::Name(m) | OptionError::Value(m) | OptionError::Refused(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("own_settings", &self.own.lock().is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session of `user` over `base`.
    pub(super) fn new(base: Arc<Engine>, user: Option<String>) -> Arc<Session> {
        Arc::new(Session {
            id: uuid::Uuid::new_v4().simple().to_string(),
            user,
            base,
            own: Mutex::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// The session's id, as its cookie carries it.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Whether its client closed it.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// The engine statements run on now.
    pub(super) fn engine(&self) -> Arc<Engine> {
        self.own.lock().clone().unwrap_or_else(|| self.base.clone())
    }

    /// The engine `sql` runs on: the session's own for a statement that changes a setting.
    pub(super) fn engine_for(&self, sql: &str) -> Arc<Engine> {
        if matches!(self.base.changed_setting(sql), Ok(Some(_))) {
            self.own_engine()
        } else {
            self.engine()
        }
    }

    /// The session's own engine, made on first use.
    pub(super) fn own_engine(&self) -> Arc<Engine> {
        self.own
            .lock()
            .get_or_insert_with(|| Arc::new(self.base.new_session()))
            .clone()
    }

    /// The options a client sees: `catalog` and `schema`, which names are looked up in, and
    /// each setting whose value is not the server's, by its full name.
    pub(super) fn options(&self) -> BTreeMap<String, String> {
        let server: HashMap<String, Option<String>> = self.base.settings().into_iter().collect();
        let mut options = BTreeMap::new();
        for (key, value) in self.engine().settings() {
            let name = match key.as_str() {
                CATALOG => "catalog".to_string(),
                SCHEMA => "schema".to_string(),
                _ if server.get(&key) == Some(&value) => continue,
                _ => key,
            };
            options.insert(name, value.unwrap_or_default());
        }
        options
    }

    /// Set option `name` (a setting's full or short name, or `catalog` or `schema`) to
    /// `value`; `None` sets it back to the server's value.
    pub(super) async fn set_option(
        &self,
        name: &str,
        value: Option<String>,
    ) -> Result<(), OptionError> {
        let server: HashMap<String, Option<String>> = self.base.settings().into_iter().collect();
        let key = setting_name(name, &server)
            .ok_or_else(|| OptionError::Name(format!("no setting is named {name}")))?;
        check_setting(&key).map_err(|e| OptionError::Refused(e.to_string()))?;
        let ctx = self.base.session();
        match (key.as_str(), &value) {
            (CATALOG, Some(catalog)) if ctx.catalog(catalog).is_none() => {
                return Err(OptionError::Value(format!("no catalog is named {catalog}")));
            }
            (SCHEMA, Some(schema)) => {
                let catalog = self
                    .engine()
                    .settings()
                    .into_iter()
                    .find(|(k, _)| k == CATALOG);
                let catalog = catalog.and_then(|(_, v)| v).unwrap_or_default();
                let found = ctx.catalog(&catalog).and_then(|c| c.schema(schema));
                if found.is_none() {
                    return Err(OptionError::Value(format!(
                        "no schema is named {schema} in catalog {catalog}"
                    )));
                }
            }
            _ => {}
        }
        let statement = match value.or_else(|| server.get(&key).cloned().flatten()) {
            Some(value) => format!("SET {key} = '{}'", value.replace('\'', "''")),
            None => format!("RESET {key}"),
        };
        let own = self.own_engine();
        own.session()
            .sql(&statement)
            .await
            .map(drop)
            .map_err(|e| OptionError::Value(format!("{name}: {e}")))
    }
}

/// The full name of the setting `name` stands for, if there is one: itself, its short name's
/// (see [`crate::sql::SETTING_ALIASES`]), or itself under `datafusion.`.
fn setting_name(name: &str, settings: &HashMap<String, Option<String>>) -> Option<String> {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "catalog" => return Some(CATALOG.to_string()),
        "schema" => return Some(SCHEMA.to_string()),
        _ => {}
    }
    let alias = crate::sql::SETTING_ALIASES
        .iter()
        .find(|(short, _)| *short == lower)
        .map(|(_, full)| full.to_string());
    [
        alias,
        Some(lower.clone()),
        Some(format!("datafusion.{lower}")),
    ]
    .into_iter()
    .flatten()
    .find(|key| settings.contains_key(key) || key.starts_with("datafusion.runtime."))
}

/// The Flight SQL sessions clients can name in their cookie.
#[derive(Default)]
pub(super) struct Sessions {
    by_id: Mutex<HashMap<String, Weak<Session>>>,
}

impl Sessions {
    /// Keep `session` where its id finds it (while it lasts).
    pub(super) fn add(&self, session: &Arc<Session>) {
        let mut by_id = self.by_id.lock();
        by_id.retain(|_, s| s.strong_count() > 0);
        by_id.insert(session.id.clone(), Arc::downgrade(session));
    }

    /// The session a request's `cookie` header names, if it is `user`'s and still open.
    pub(super) fn find(&self, cookie: &str, user: Option<&str>) -> Option<Arc<Session>> {
        let id = cookie
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, id)| id.trim_matches('"'))?;
        let session = self.by_id.lock().get(id)?.upgrade()?;
        (session.user.as_deref() == user && !session.is_closed()).then_some(session)
    }

    /// Close `session`: no request uses it from now on.
    pub(super) fn close(&self, session: &Session) {
        session.closed.store(true, Ordering::Relaxed);
        self.by_id.lock().remove(&session.id);
    }
}

/// The messages of Flight's session actions (`SetSessionOptions`, `GetSessionOptions`,
/// `CloseSession`), which arrow-flight does not define.
pub mod messages {
    use std::collections::HashMap;

    /// A session option's value; none means "back to the server's value".
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionOptionValue {
        /// The value.
        #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
        pub option_value: Option<OptionValue>,
    }

    /// The kinds of value an option takes.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum OptionValue {
        /// Text.
        #[prost(string, tag = "1")]
        StringValue(String),
        /// A boolean.
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        /// An integer.
        #[prost(sfixed64, tag = "3")]
        Int64Value(i64),
        /// A floating point number.
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        /// A list of strings.
        #[prost(message, tag = "5")]
        StringListValue(StringList),
    }

    /// A list of strings.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringList {
        /// The strings.
        #[prost(string, repeated, tag = "1")]
        pub values: Vec<String>,
    }

    /// `SetSessionOptions`' request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SetSessionOptionsRequest {
        /// The options to set.
        #[prost(map = "string, message", tag = "1")]
        pub session_options: HashMap<String, SessionOptionValue>,
    }

    /// `SetSessionOptions`' result: the options that were not set, and why.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SetSessionOptionsResult {
        /// By option name.
        #[prost(map = "string, message", tag = "1")]
        pub errors: HashMap<String, SetError>,
    }

    /// Why an option was not set.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SetError {
        /// An [`ErrorValue`].
        #[prost(enumeration = "ErrorValue", tag = "1")]
        pub value: i32,
    }

    /// The reasons an option is not set.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ErrorValue {
        /// Not said.
        Unspecified = 0,
        /// No option has that name.
        InvalidName = 1,
        /// The option cannot take that value.
        InvalidValue = 2,
        /// The option cannot be set.
        Error = 3,
    }

    /// `GetSessionOptions`' result.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetSessionOptionsResult {
        /// By option name.
        #[prost(map = "string, message", tag = "1")]
        pub session_options: HashMap<String, SessionOptionValue>,
    }

    /// `CloseSession`'s result.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CloseSessionResult {
        /// A [`CloseStatus`].
        #[prost(enumeration = "CloseStatus", tag = "1")]
        pub status: i32,
    }

    /// How a session's closing went.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum CloseStatus {
        /// Not said.
        Unspecified = 0,
        /// Closed.
        Closed = 1,
        /// Being closed.
        Closing = 2,
        /// Cannot be closed.
        NotCloseable = 3,
    }
}

/// An option's value as the text a setting takes; `None` for no value (back to the
/// server's); an error for a list, which no setting takes.
pub(super) fn option_text(value: &messages::SessionOptionValue) -> Result<Option<String>, String> {
    use messages::OptionValue::*;
    Ok(match &value.option_value {
        None => None,
        Some(StringValue(s)) => Some(s.clone()),
        Some(BoolValue(b)) => Some(b.to_string()),
        Some(Int64Value(i)) => Some(i.to_string()),
        Some(DoubleValue(d)) => Some(d.to_string()),
        Some(StringListValue(_)) => return Err("no setting takes a list of strings".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_changes_its_own_settings_only() {
        let base = Arc::new(Engine::builder().threads(1).build().await.unwrap());
        let one = Session::new(base.clone(), None);
        let other = Session::new(base.clone(), None);
        assert!(Arc::ptr_eq(&one.engine(), &base), "no copy before a change");
        one.set_option("batch_size", Some("77".into()))
            .await
            .unwrap();
        let batch = |e: &Engine| {
            e.settings()
                .into_iter()
                .find(|(k, _)| k == "datafusion.execution.batch_size")
                .and_then(|(_, v)| v)
        };
        assert_eq!(batch(&one.engine()).as_deref(), Some("77"));
        assert_ne!(batch(&base).as_deref(), Some("77"));
        assert_ne!(batch(&other.engine()).as_deref(), Some("77"));
        let options = one.options();
        assert_eq!(options["datafusion.execution.batch_size"], "77");
        assert_eq!(options["catalog"], "datafusion");
        assert!(
            !other
                .options()
                .contains_key("datafusion.execution.batch_size")
        );

        // Back to the server's value.
        one.set_option("datafusion.execution.batch_size", None)
            .await
            .unwrap();
        assert_eq!(batch(&one.engine()), batch(&base));

        let err = one.set_option("no_such_thing", Some("1".into())).await;
        assert!(matches!(err, Err(OptionError::Name(_))), "{err:?}");
        let err = one.set_option("batch_size", Some("many".into())).await;
        assert!(matches!(err, Err(OptionError::Value(_))), "{err:?}");
        let err = one.set_option("memory_limit", Some("1T".into())).await;
        assert!(matches!(err, Err(OptionError::Refused(_))), "{err:?}");
        let err = one.set_option("catalog", Some("nowhere".into())).await;
        assert!(matches!(err, Err(OptionError::Value(_))), "{err:?}");
        let err = one.set_option("schema", Some("nowhere".into())).await;
        assert!(matches!(err, Err(OptionError::Value(_))), "{err:?}");
        one.set_option("schema", Some("public".into()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_cookie_finds_its_users_open_session_only() {
        let base = Arc::new(Engine::builder().threads(1).build().await.unwrap());
        let sessions = Sessions::default();
        let alice = Session::new(base.clone(), Some("alice".into()));
        sessions.add(&alice);
        let cookie = format!("theme=dark; {COOKIE}={}", alice.id());
        assert!(sessions.find(&cookie, Some("alice")).is_some());
        assert!(sessions.find(&cookie, Some("bob")).is_none());
        assert!(sessions.find(&cookie, None).is_none());
        assert!(sessions.find("theme=dark", Some("alice")).is_none());
        sessions.close(&alice);
        assert!(alice.is_closed());
        assert!(sessions.find(&cookie, Some("alice")).is_none());
        let bob = Session::new(base, Some("bob".into()));
        sessions.add(&bob);
        let cookie = format!("{COOKIE}={}", bob.id());
        drop(bob);
        assert!(
            sessions.find(&cookie, Some("bob")).is_none(),
            "gone with its last user"
        );
    }
}
