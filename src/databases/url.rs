//! Database URLs: which backend, where, as whom, and the password found the way the
//! backend's own clients find it (the environment, `~/.pgpass`), never written in the URL,
//! which queries and the dashboard show.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::DatabaseError;

/// The backends Strata reads tables from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (`postgres://` or `postgresql://`).
    Postgres,
    /// MySQL or MariaDB (`mysql://` or `mariadb://`).
    MySql,
    /// An SQLite file (`sqlite:PATH` or `sqlite:///ABSOLUTE/PATH`).
    Sqlite,
}

impl Backend {
    /// The name users know it by.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::MySql => "MySQL",
            Backend::Sqlite => "SQLite",
        }
    }

    /// Its URL scheme, which also names a SELECT sent to it in plans.
    pub fn scheme(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Backend::Postgres => 5432,
            Backend::MySql => 3306,
            Backend::Sqlite => 0,
        }
    }
}

/// A database, as a URL names it, with what the URL leaves out taken from the backend's
/// usual environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// Which backend.
    pub backend: Backend,
    /// The server's host (empty for SQLite).
    pub host: String,
    /// The server's port (0 for SQLite).
    pub port: u16,
    /// Who connects (`None` for SQLite).
    pub user: Option<String>,
    /// The database on the server (`None` for SQLite).
    pub database: Option<String>,
    /// The SQLite file.
    pub path: Option<PathBuf>,
    /// The URL's query options (`sslmode=disable`, ...), keys lowercase.
    pub options: BTreeMap<String, String>,
}

/// Whether `text` names a database rather than a file or store.
pub fn is_database_url(text: &str) -> bool {
    let scheme = text.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    matches!(
        scheme.as_deref(),
        Some("postgres" | "postgresql" | "mysql" | "mariadb" | "sqlite")
    )
}

/// `text` without its `table=NAME` query option, and that name: `postgres://h/db?table=t`
/// names the table `t` in the database `db` (as `strata convert` destinations do).
pub fn split_table_option(text: &str) -> (String, Option<String>) {
    let Some((base, query)) = text.split_once('?') else {
        return (text.to_string(), None);
    };
    let mut table = None;
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key.eq_ignore_ascii_case("table") {
            table = Some(value.into_owned());
        } else {
            kept.append_pair(&key, &value);
        }
    }
    let kept = kept.finish();
    match kept.is_empty() {
        true => (base.to_string(), table),
        false => (format!("{base}?{kept}"), table),
    }
}

impl DatabaseUrl {
    /// Parses `text`, with `env` looking up environment variables (`PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGDATABASE`, `USER` for what the URL does not say). Relative SQLite paths
    /// resolve against `base_dir`.
    pub fn parse(
        text: &str,
        base_dir: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, DatabaseError> {
        let bad = |reason: &str| DatabaseError::BadUrl {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| bad("it has no scheme"))?;
        let backend = match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Backend::Postgres,
            "mysql" | "mariadb" => Backend::MySql,
            "sqlite" => Backend::Sqlite,
            _ => return Err(bad("use postgres://, mysql:// or sqlite:")),
        };
        if backend == Backend::Sqlite {
            // sqlite:data/x.db, sqlite://data/x.db (relative), sqlite:///abs/x.db
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let (path, _) = path.split_once('?').unwrap_or((path, ""));
            if path.is_empty() {
                return Err(bad("it names no file: write sqlite:path/to/file.db"));
            }
            let path = PathBuf::from(path);
            let path = match base_dir {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path,
            };
            return Ok(DatabaseUrl {
                backend,
                host: String::new(),
                port: 0,
                user: None,
                database: None,
                path: Some(path),
                options: BTreeMap::new(),
            });
        }
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if url.password().is_some() {
            let mut shown = url.clone();
            let _ = shown.set_password(None);
            let (variable, file) = match backend {
                Backend::Postgres => ("PGPASSWORD", "~/.pgpass"),
                _ => ("MYSQL_PWD", "a ${VAR} in the catalog"),
            };
            return Err(DatabaseError::InlinePassword {
                url: shown.to_string(),
                variable,
                file,
            });
        }
        let (host_var, port_var, user_var, db_var) = match backend {
            Backend::Postgres => ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"),
            _ => (
                "MYSQL_HOST",
                "MYSQL_TCP_PORT",
                "MYSQL_USER",
                "MYSQL_DATABASE",
            ),
        };
        let host = match url.host_str().filter(|h| !h.is_empty()) {
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            None => env(host_var).unwrap_or_else(|| "localhost".into()),
        };
        let port = match url.port() {
            Some(p) => p,
            None => match env(port_var) {
                Some(p) => p
                    .parse()
                    .map_err(|_| bad(&format!("{port_var}={p} is not a port")))?,
                None => backend.default_port(),
            },
        };
        let user = Some(url.username())
            .filter(|u| !u.is_empty())
            .map(decode)
            .or_else(|| env(user_var))
            .or_else(|| env("USER"));
        let database = Some(url.path().trim_start_matches('/'))
            .filter(|d| !d.is_empty())
            .map(decode)
            .or_else(|| env(db_var))
            .or_else(|| user.clone().filter(|_| backend == Backend::Postgres));
        let options = url
            .query_pairs()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect();
        Ok(DatabaseUrl {
            backend,
            host,
            port,
            user,
            database,
            path: None,
            options,
        })
    }

    /// The URL to show in messages and plans: no password is ever part of it.
    pub fn display(&self) -> String {
        match self.backend {
            Backend::Sqlite => format!(
                "sqlite:{}",
                self.path.as_deref().unwrap_or(Path::new("")).display()
            ),
            backend => format!(
                "{}://{}{}:{}/{}",
                if backend == Backend::Postgres {
                    "postgres"
                } else {
                    "mysql"
                },
                self.user
                    .as_deref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default(),
                self.host,
                self.port,
                self.database.as_deref().unwrap_or("")
            ),
        }
    }

    /// The URL with everything filled in (environment defaults included) and its options:
    /// another process (a scheduler, an executor) parses it to the same database. Never
    /// holds a password.
    pub fn canonical(&self) -> String {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let encode = |t: &str| utf8_percent_encode(t, NON_ALPHANUMERIC).to_string();
        if self.backend == Backend::Sqlite {
            return self.display();
        }
        let mut text = format!(
            "{}://{}{}:{}/{}",
            if self.backend == Backend::Postgres {
                "postgres"
            } else {
                "mysql"
            },
            self.user
                .as_deref()
                .map(|u| format!("{}@", encode(u)))
                .unwrap_or_default(),
            if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            },
            self.port,
            self.database.as_deref().map(encode).unwrap_or_default()
        );
        for (i, (k, v)) in self.options.iter().enumerate() {
            text.push(if i == 0 { '?' } else { '&' });
            text.push_str(&format!("{}={}", encode(k), encode(v)));
        }
        text
    }

    /// The password to connect with, found as the backend's own clients find it: for
    /// PostgreSQL `PGPASSWORD`, then the password file (`PGPASSFILE` or `~/.pgpass`); for
    /// MySQL `MYSQL_PWD`. `None` if none is set (the server may not ask for one).
    pub fn password(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        match self.backend {
            Backend::Sqlite => None,
            Backend::MySql => env("MYSQL_PWD"),
            Backend::Postgres => env("PGPASSWORD").or_else(|| {
                let file = env("PGPASSFILE")
                    .map(PathBuf::from)
                    .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
                let text = std::fs::read_to_string(file).ok()?;
                pgpass_lookup(
                    &text,
                    &self.host,
                    self.port,
                    self.database.as_deref().unwrap_or(""),
                    self.user.as_deref().unwrap_or(""),
                )
            }),
        }
    }
}

/// `text` with its `%XX` escapes read (as URLs write user and database names).
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The password of the first line of a `.pgpass` file (`host:port:database:user:password`,
/// `*` matching anything, `\:` and `\\` escaped) that matches.
fn pgpass_lookup(text: &str, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    let wanted = [host, port.as_str(), database, user];
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .find_map(|line| {
            let fields = split_escaped(line);
            if fields.len() != 5 {
                return None;
            }
            let matches = fields[..4].iter().zip(wanted).all(|(field, value)| {
                field == "*" || field == value || (field == "localhost" && value.starts_with('/'))
            });
            matches.then(|| fields[4].clone())
        })
}

/// `line` cut at unescaped `:`, with `\x` read as `x`.
fn split_escaped(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_option_is_taken_out_of_the_url() {
        assert_eq!(
            split_table_option("postgres://h/db?sslmode=disable&table=public.t"),
            (
                "postgres://h/db?sslmode=disable".into(),
                Some("public.t".into())
            )
        );
        assert_eq!(
            split_table_option("sqlite:out.db?table=my%20t"),
            ("sqlite:out.db".into(), Some("my t".into()))
        );
        assert_eq!(
            split_table_option("mysql://h/shop"),
            ("mysql://h/shop".into(), None)
        );
    }

    #[test]
    fn canonical_urls_parse_back_to_the_same_database_anywhere() {
        let here = env_of(&[("PGUSER", "ann"), ("PGHOST", "db.internal")]);
        let url = DatabaseUrl::parse("postgres:///my%20db?sslmode=disable", None, &here).unwrap();
        let elsewhere = env_of(&[("PGUSER", "bob"), ("PGHOST", "other")]);
        let back = DatabaseUrl::parse(&url.canonical(), None, &elsewhere).unwrap();
        assert_eq!(back, url);
        assert_eq!(back.database.as_deref(), Some("my db"));
        let v6 = DatabaseUrl::parse("mysql://u@[::1]:3307/shop", None, &here).unwrap();
        assert_eq!(
            DatabaseUrl::parse(&v6.canonical(), None, &here).unwrap(),
            v6
        );
        let file = DatabaseUrl::parse("sqlite:x.db", Some(Path::new("/data")), &here).unwrap();
        assert_eq!(
            DatabaseUrl::parse(&file.canonical(), None, &here).unwrap(),
            file
        );
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn a_postgres_url_takes_what_it_leaves_out_from_the_environment() {
        let env = env_of(&[("PGUSER", "ann"), ("PGPORT", "6543"), ("USER", "root")]);
        let url =
            DatabaseUrl::parse("postgres://db.example/sales?sslmode=disable", None, &env).unwrap();
        assert_eq!(url.backend, Backend::Postgres);
        assert_eq!(url.host, "db.example");
        assert_eq!(url.port, 6543);
        assert_eq!(url.user.as_deref(), Some("ann"));
        assert_eq!(url.database.as_deref(), Some("sales"));
        assert_eq!(url.options["sslmode"], "disable");
        assert_eq!(url.display(), "postgres://ann@db.example:6543/sales");
        // Nothing said anywhere: localhost, the default port, the login name as database.
        let url = DatabaseUrl::parse("postgresql://", None, &env_of(&[("USER", "bo")])).unwrap();
        assert_eq!(
            (
                url.host.as_str(),
                url.port,
                url.user.as_deref(),
                url.database.as_deref()
            ),
            ("localhost", 5432, Some("bo"), Some("bo"))
        );
        let url = DatabaseUrl::parse("postgres://a%40b@h/my%20db", None, &env).unwrap();
        assert_eq!(url.user.as_deref(), Some("a@b"));
        assert_eq!(url.database.as_deref(), Some("my db"));
        let url = DatabaseUrl::parse("mariadb://me@127.0.0.1/shop", None, &env).unwrap();
        assert_eq!((url.backend, url.port), (Backend::MySql, 3306));
        assert_eq!(url.display(), "mysql://me@127.0.0.1:3306/shop");
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_being_repeated() {
        let err = DatabaseUrl::parse("postgres://ann:s3cret@h/db", None, &env_of(&[])).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("PGPASSWORD") && text.contains("ann@h"),
            "{text}"
        );
        let err = DatabaseUrl::parse("mysql://u:p@h/db", None, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("MYSQL_PWD"), "{err}");
    }

    #[test]
    fn sqlite_urls_name_a_file_relative_to_the_catalog() {
        let env = env_of(&[]);
        let base = Path::new("/cat");
        let url = DatabaseUrl::parse("sqlite:data/x.db", Some(base), &env).unwrap();
        assert_eq!(url.path.as_deref(), Some(Path::new("/cat/data/x.db")));
        let url = DatabaseUrl::parse("sqlite:///abs/x.db", Some(base), &env).unwrap();
        assert_eq!(url.path.as_deref(), Some(Path::new("/abs/x.db")));
        assert_eq!(url.display(), "sqlite:/abs/x.db");
        assert!(DatabaseUrl::parse("sqlite:", None, &env).is_err());
        let err = DatabaseUrl::parse("oracle://h/db", None, &env).unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");
        assert!(is_database_url("SQLite:x.db") && is_database_url("postgres://h/d"));
        assert!(!is_database_url("s3://b/x.parquet") && !is_database_url("data/x.csv"));
    }

    #[test]
    fn the_password_comes_from_pgpassword_then_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:ann:no\nh:5432:sales:ann:first\\:one\n*:*:*:ann:any\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let url = DatabaseUrl::parse("postgres://ann@h/sales", None, &env_of(&[])).unwrap();
        let from_file = env_of(&[("PGPASSFILE", file)]);
        assert_eq!(url.password(&from_file).as_deref(), Some("first:one"));
        let both = env_of(&[("PGPASSFILE", file), ("PGPASSWORD", "env")]);
        assert_eq!(url.password(&both).as_deref(), Some("env"));
        let elsewhere = DatabaseUrl::parse("postgres://ann@k/x", None, &env_of(&[])).unwrap();
        assert_eq!(elsewhere.password(&from_file).as_deref(), Some("any"));
        let nobody = DatabaseUrl::parse("postgres://bo@k/x", None, &env_of(&[])).unwrap();
        assert_eq!(nobody.password(&from_file), None);
    }
}
