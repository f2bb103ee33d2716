//! Who may use the server: users with passwords and API tokens from a TOML file of hashed
//! secrets (read again when it changes), Basic credentials exchanged at the Flight SQL
//! handshake for a bearer token that expires, and a check of every other call.
//!
//! <!-- example: skip: a users file, its hashes cut short -->
//! ```toml
//! [users.alice]
//! password = "$argon2id$v=19$..."      # `strata hash-secret` prints these
//! api_tokens = ["$argon2id$v=19$..."]  # sent as `authorization: Bearer TOKEN`
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, SchemaResult, Ticket,
};
use base64::Engine as _;
use futures::Stream;
use serde::Deserialize;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

/// The users file could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("users file {path}: {message}")]
pub struct AuthError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: HashMap<String, UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    password: Option<String>,
    #[serde(default)]
    api_tokens: Vec<String>,
}

/// The user a call was made by, put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

/// The hash of a password or API token for the users file (Argon2id with a random salt).
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

fn verify(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Users from a file, and the bearer tokens handed out to them.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    users: Mutex<(Option<SystemTime>, Arc<UsersFile>)>,
    /// Bearer tokens from handshakes: user and expiry.
    sessions: Mutex<HashMap<String, (String, Instant)>>,
    /// API tokens (and Basic credentials) already verified against the current file, so a
    /// call does not pay for a hash; cleared when the file changes.
    verified: Mutex<HashMap<String, String>>,
    ttl: Duration,
}

impl Auth {
    /// Read the users file; handshake tokens live for `ttl`.
    pub fn load(path: &Path, ttl: Duration) -> Result<Auth, AuthError> {
        let (modified, users) = read_users(path)?;
        Ok(Auth {
            path: path.to_path_buf(),
            users: Mutex::new((modified, Arc::new(users))),
            sessions: Mutex::default(),
            verified: Mutex::default(),
            ttl,
        })
    }

    /// The users, read again when the file changed; a file that became invalid leaves the
    /// last good one in force.
    fn users(&self) -> Arc<UsersFile> {
        let mut held = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified != held.0 {
            match read_users(&self.path) {
                Ok((m, users)) => {
                    *held = (m, Arc::new(users));
                    self.verified
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
                }
                Err(e) => log::warn!(target: "strata::auth", "{e}; keeping the users read before"),
            }
        }
        held.1.clone()
    }

    /// A user name and password, checked; `None` if they do not match.
    fn login(&self, user: &str, password: &str) -> Option<String> {
        let users = self.users();
        let entry = users.users.get(user)?;
        let hash = entry.password.as_deref()?;
        verify(password, hash).then(|| user.to_string())
    }

    /// A user's name and password, or an API token of that user given as the password (as
    /// PostgreSQL clients, which have nowhere else to put one, do): the name if either
    /// matches.
    pub(crate) fn sign_in(&self, user: &str, secret: &str) -> Option<String> {
        if let Some(name) = self.login(user, secret) {
            return Some(name);
        }
        let users = self.users();
        let entry = users.users.get(user)?;
        entry
            .api_tokens
            .iter()
            .any(|hash| verify(secret, hash))
            .then(|| user.to_string())
    }

    /// Exchange Basic credentials for a bearer token.
    fn handshake(&self, metadata: &MetadataMap) -> Result<(String, String), Status> {
        // A client may send a stale bearer token beside its credentials.
        let (user, password) = metadata
            .get_all("authorization")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(basic)
            .ok_or_else(|| {
                Status::unauthenticated("the handshake takes Basic credentials (user and password)")
            })?;
        let user = self
            .login(&user, &password)
            .ok_or_else(|| Status::unauthenticated("wrong user name or password"))?;
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, (_, until)| *until > now);
        sessions.insert(token.clone(), (user.clone(), now + self.ttl));
        log::info!(target: "strata::auth", "{user} signed in");
        Ok((user, token))
    }

    /// The user a call is made by: a bearer token from a handshake or an API token, or
    /// Basic credentials.
    pub fn check(&self, metadata: &MetadataMap) -> Result<User, Status> {
        let header = authorization(metadata)
            .ok_or_else(|| Status::unauthenticated("sign in first: this server needs a token"))?;
        if let Some(token) = strip_scheme(header, "bearer") {
            if let Some((user, until)) = self
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(token)
                .cloned()
            {
                return if until > Instant::now() {
                    Ok(User(user))
                } else {
                    Err(Status::unauthenticated("the token expired; sign in again"))
                };
            }
            return self.api_token(token).map(User);
        }
        if let Some((user, password)) = basic(header) {
            let key = format!("basic:{header}");
            if let Some(user) = self.cached(&key) {
                return Ok(User(user));
            }
            let user = self
                .login(&user, &password)
                .ok_or_else(|| Status::unauthenticated("wrong user name or password"))?;
            self.remember(key, &user);
            return Ok(User(user));
        }
        Err(Status::unauthenticated(
            "the authorization header takes Bearer TOKEN or Basic credentials",
        ))
    }

    fn api_token(&self, token: &str) -> Result<String, Status> {
        let key = format!("bearer:{token}");
        let users = self.users();
        if let Some(user) = self.cached(&key) {
            return Ok(user);
        }
        for (name, entry) in &users.users {
            if entry.api_tokens.iter().any(|hash| verify(token, hash)) {
                self.remember(key, name);
                return Ok(name.clone());
            }
        }
        Err(Status::unauthenticated(
            "unknown or expired token; sign in again",
        ))
    }

    fn cached(&self, key: &str) -> Option<String> {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: String, user: &str) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, user.to_string());
    }
}

fn read_users(path: &Path) -> Result<(Option<SystemTime>, UsersFile), AuthError> {
    let err = |message: String| AuthError {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let users: UsersFile = toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
    for (name, entry) in &users.users {
        for hash in entry.password.iter().chain(&entry.api_tokens) {
            if PasswordHash::new(hash).is_err() {
                return Err(err(format!(
                    "user {name}: secrets are stored hashed (`strata hash-secret` prints a hash), \
                     never in plain text"
                )));
            }
        }
    }
    Ok((modified, users))
}

fn authorization(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("authorization")?.to_str().ok()
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.trim().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn basic(header: &str) -> Option<(String, String)> {
    let encoded = strip_scheme(header, "basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A Flight service that answers the handshake with a bearer token and lets through only
/// calls that carry a valid one (or an API token, or Basic credentials).
#[derive(Clone)]
pub struct Authenticated<T> {
    inner: T,
    auth: Arc<Auth>,
}

impl<T> Authenticated<T> {
    /// `inner`, behind `auth`.
    pub fn new(inner: T, auth: Arc<Auth>) -> Self {
        Authenticated { inner, auth }
    }

    fn admit<R>(&self, mut request: Request<R>) -> Result<Request<R>, Status> {
        let user = self.auth.check(request.metadata())?;
        request.extensions_mut().insert(user);
        Ok(request)
    }
}

type Stream2<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<T: FlightService> FlightService for Authenticated<T> {
    type HandshakeStream = Stream2<HandshakeResponse>;
    type ListFlightsStream = T::ListFlightsStream;
    type DoGetStream = T::DoGetStream;
    type DoPutStream = T::DoPutStream;
    type DoExchangeStream = T::DoExchangeStream;
    type DoActionStream = T::DoActionStream;
    type ListActionsStream = T::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let (_, token) = self.auth.handshake(request.metadata())?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let stream: Self::HandshakeStream = Box::pin(futures::stream::iter([Ok(reply)]));
        let mut response = Response::new(stream);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a header value"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.inner.list_flights(self.admit(request)?).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.inner.get_flight_info(self.admit(request)?).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.inner.poll_flight_info(self.admit(request)?).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.inner.get_schema(self.admit(request)?).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.inner.do_get(self.admit(request)?).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.inner.do_put(self.admit(request)?).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.inner.do_exchange(self.admit(request)?).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.inner.do_action(self.admit(request)?).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.inner.list_actions(self.admit(request)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(header: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", header.parse().unwrap());
        m
    }

    fn basic_header(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    #[test]
    fn passwords_become_expiring_tokens_and_the_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.toml");
        let write = |text: String| std::fs::write(&file, text).unwrap();
        write(format!(
            "[users.alice]\npassword = \"{}\"\napi_tokens = [\"{}\"]\n",
            hash_secret("s3cret"),
            hash_secret("tok-1")
        ));
        let auth = Auth::load(&file, Duration::from_secs(60)).unwrap();
        let (user, token) = auth
            .handshake(&metadata(&basic_header("alice", "s3cret")))
            .unwrap();
        assert_eq!(user, "alice");
        let bearer = metadata(&format!("Bearer {token}"));
        assert_eq!(auth.check(&bearer).unwrap(), User("alice".into()));
        assert_eq!(
            auth.check(&metadata("Bearer tok-1")).unwrap(),
            User("alice".into())
        );
        for wrong in [basic_header("alice", "nope"), basic_header("bob", "s3cret")] {
            let e = auth.handshake(&metadata(&wrong)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
        assert!(auth.check(&metadata("Bearer forged")).is_err());
        assert!(auth.check(&MetadataMap::new()).is_err());

        // A token past its lifetime is refused.
        let short = Auth::load(&file, Duration::ZERO).unwrap();
        let (_, token) = short
            .handshake(&metadata(&basic_header("alice", "s3cret")))
            .unwrap();
        let e = short
            .check(&metadata(&format!("Bearer {token}")))
            .unwrap_err();
        assert!(e.message().contains("expired"), "{e}");

        // A changed file is read again without a restart; plain-text secrets are refused.
        write(format!(
            "[users.bob]\npassword = \"{}\"\n",
            hash_secret("pw")
        ));
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .append(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(
            auth.handshake(&metadata(&basic_header("bob", "pw")))
                .is_ok()
        );
        assert!(auth.check(&metadata("Bearer tok-1")).is_err());
        std::fs::write(
            dir.path().join("plain.toml"),
            "[users.x]\npassword = \"pw\"\n",
        )
        .unwrap();
        let e = Auth::load(&dir.path().join("plain.toml"), Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("hashed"), "{e}");
    }
}
