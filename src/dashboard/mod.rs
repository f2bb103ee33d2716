//! The dashboard: web pages of the engine's running and recent queries, each query's plan
//! drawn with its operators' live figures, and a Cancel button; its datasets; its workers
//! (a cluster's executors, or this process); its cluster's jobs; JSON under `/api/` for
//! scripts. Its pages, styles and script are compiled into the binary (no network needed).
//! On a loopback address anyone on the machine may look; elsewhere only signed-in users.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::Engine;
use crate::cluster::JobStats;
use crate::monitor::{CancelRefused, PlanNode, QueryInfo};
use crate::server::{Auth, Tls};

mod report;
mod workers;

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Each page: its path, its name (its `data-page`, which the script reads, and its title),
/// the section of the navigation it belongs to, and its own content.
const PAGES: [(&str, &str, Option<&str>, &str); 6] = [
    (
        "/",
        "queries",
        Some("/"),
        include_str!("assets/queries.html"),
    ),
    (
        "/queries/{id}",
        "query",
        None,
        include_str!("assets/query.html"),
    ),
    (
        "/jobs",
        "jobs",
        Some("/jobs"),
        include_str!("assets/jobs.html"),
    ),
    ("/jobs/{id}", "job", None, include_str!("assets/job.html")),
    (
        "/datasets",
        "datasets",
        Some("/datasets"),
        include_str!("assets/datasets.html"),
    ),
    (
        "/workers",
        "workers",
        Some("/workers"),
        include_str!("assets/workers.html"),
    ),
];
/// The navigation's sections: path and label.
const SECTIONS: [(&str, &str); 4] = [
    ("/", "Queries"),
    ("/jobs", "Jobs"),
    ("/datasets", "Datasets"),
    ("/workers", "Workers"),
];
/// The stage graph, stage table and task stream of a cluster job, which the job page and a
/// cluster query's page both show where their content says `<!-- stages -->`.
const STAGES: &str = include_str!("assets/stages.html");
const STAGES_MARK: &str = "<!-- stages -->\n";
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");
/// The header a request that changes something (Cancel) must carry: a page of another site
/// cannot send it without the browser asking first, and the dashboard never agrees.
pub const ACTION_HEADER: &str = "x-strata-dashboard";

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address is not one this machine can listen on.
    #[error("cannot serve the dashboard on {address}: {message}")]
    Listen {
        /// The address asked for.
        address: String,
        /// Why not.
        message: String,
    },
    /// An address other machines can reach, without sign-in.
    #[error(
        "the dashboard listens on {address}, which other machines can reach, only when users \
         sign in (`strata serve --users FILE --dashboard ADDR`); use a loopback address such \
         as 127.0.0.1:8787"
    )]
    NeedsSignIn {
        /// The address asked for.
        address: String,
    },
}

/// The dashboard of one engine and the sessions made from it.
pub struct Dashboard {
    engine: Engine,
    auth: Option<Arc<Auth>>,
    tls: Option<Tls>,
    executors: workers::Seen,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("auth", &self.auth.is_some())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A dashboard being served; dropping it stops it.
#[derive(Debug)]
pub struct Serving {
    address: SocketAddr,
    https: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its address as a link to open in a browser.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/", self.address)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Dashboard {
    /// The dashboard of `engine`'s queries (and of every session sharing its monitor).
    pub fn new(engine: Engine) -> Self {
        Dashboard {
            engine,
            auth: None,
            tls: None,
            executors: workers::Seen::default(),
        }
    }

    /// Let in only the users of `auth` (Basic credentials, or a bearer token).
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Serve the pages over HTTPS with `tls` (the certificate of `strata serve`).
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The dashboard's routes, to serve alone or beside others.
    pub fn router(self) -> Router {
        let shared = Arc::new(self);
        let mut router = Router::new();
        for (path, name, section, main) in PAGES {
            let html = page(name, section, main);
            router = router.route(path, get(move || std::future::ready(Html(html.clone()))));
        }
        router
            .route("/assets/dashboard.js", get(script))
            .route("/assets/dashboard.css", get(style))
            .route("/api/queries", get(list))
            .route("/api/queries/{id}", get(detail))
            .route("/api/queries/{id}/plan.svg", get(plan_svg))
            .route("/api/queries/{id}/plan.dot", get(plan_dot))
            .route("/api/queries/{id}/report.html", get(report))
            .route("/api/queries/{id}/cancel", post(cancel))
            .route("/api/datasets", get(datasets))
            .route("/api/workers", get(workers))
            .route("/api/cluster/jobs", get(jobs))
            .route("/api/cluster/jobs/{id}", get(job))
            .route("/api/cluster/jobs/{id}/cancel", post(cancel_job))
            .layer(middleware::from_fn_with_state(shared.clone(), sign_in))
            .with_state(shared)
    }

    /// Serve the dashboard on `address` (`HOST:PORT`; port 0 picks a free one) until the
    /// returned handle is dropped.
    pub async fn serve(self, address: &str) -> Result<Serving, DashboardError> {
        let listen = |message: String| DashboardError::Listen {
            address: address.to_string(),
            message,
        };
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| listen(e.to_string()))?;
        let local = listener.local_addr().map_err(|e| listen(e.to_string()))?;
        if !local.ip().is_loopback() && self.auth.is_none() {
            return Err(DashboardError::NeedsSignIn {
                address: address.to_string(),
            });
        }
        let tls = self.tls.clone();
        let https = tls.is_some();
        let app = self.router();
        let task = match tls {
            Some(tls) => tokio::spawn(run(tls.https(listener), app)),
            None => tokio::spawn(run(listener, app)),
        };
        Ok(Serving {
            address: local,
            https,
            task,
        })
    }
}

/// A whole page: the shared head and navigation (`section` marked as the one shown), the
/// page's own `main` (with the shared stages block where it is marked), and the script,
/// which draws what `name` says.
fn page(name: &str, section: Option<&str>, main: &str) -> String {
    let main = main.replace(STAGES_MARK, STAGES);
    let nav: String = SECTIONS
        .iter()
        .map(|&(path, label)| {
            let here = if section == Some(path) {
                " class=\"here\""
            } else {
                ""
            };
            format!("<a href=\"{path}\"{here}>{label}</a>")
        })
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Strata · {name}</title>\n\
         <link rel=\"stylesheet\" href=\"/assets/dashboard.css\">\n\
         <link rel=\"icon\" href=\"data:,\">\n</head>\n<body data-page=\"{name}\">\n\
         <header><a class=\"brand\" href=\"/\">Strata</a><nav>{nav}</nav>\n\
         <span id=\"status\" class=\"status\"></span></header>\n{main}\
         <script src=\"/assets/dashboard.js\"></script>\n</body>\n</html>\n"
    )
}

/// Serve `app` on `listener` until the task is aborted.
async fn run<L>(listener: L, app: Router)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    if let Err(e) = axum::serve(listener, app).await {
        log::warn!(target: "strata::dashboard", "the dashboard stopped: {e}");
    }
}

/// Let a request through when no sign-in is asked, or when it carries a user's credentials;
/// otherwise ask the browser for them.
async fn sign_in(
    State(dashboard): State<Arc<Dashboard>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(auth) = &dashboard.auth else {
        return next.run(request).await;
    };
    let metadata = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
    match auth.check(&metadata) {
        Ok(_) => next.run(request).await,
        Err(status) => {
            let mut response =
                (StatusCode::UNAUTHORIZED, status.message().to_string()).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Strata dashboard\", charset=\"UTF-8\""),
            );
            response
        }
    }
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// A JSON error: `{"error": "..."}` with its status.
fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Failure {
        error: String,
    }
    (
        status,
        Json(Failure {
            error: message.into(),
        }),
    )
        .into_response()
}

async fn list(State(dashboard): State<Arc<Dashboard>>) -> Json<Vec<QueryInfo>> {
    Json(dashboard.engine.monitor().list())
}

async fn datasets(
    State(dashboard): State<Arc<Dashboard>>,
) -> Json<Vec<crate::dataset::DatasetSummary>> {
    Json(dashboard.engine.datasets().await)
}

async fn workers(State(dashboard): State<Arc<Dashboard>>) -> Response {
    Json(dashboard.executors.workers(&dashboard.engine).await).into_response()
}

/// The refusal of a request that changes something without [`ACTION_HEADER`], which a page
/// of another site cannot send.
fn refuse_unmarked(headers: &HeaderMap) -> Option<Response> {
    (!headers.contains_key(ACTION_HEADER)).then(|| {
        failure(
            StatusCode::FORBIDDEN,
            format!("a cancel request carries the {ACTION_HEADER} header"),
        )
    })
}

/// Why a cluster route has nothing to say: the engine runs its queries on this process.
struct NotOnCluster;

impl IntoResponse for NotOnCluster {
    fn into_response(self) -> Response {
        failure(
            StatusCode::NOT_FOUND,
            "this engine runs its queries on this process, not on a cluster",
        )
    }
}

/// The scheduler the engine's queries run on.
fn scheduler(dashboard: &Dashboard) -> Result<&str, NotOnCluster> {
    dashboard.engine.runner().scheduler().ok_or(NotOnCluster)
}

async fn jobs(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let scheduler = match scheduler(&dashboard) {
        Ok(scheduler) => scheduler,
        Err(answer) => return answer.into_response(),
    };
    match crate::cluster::job_list(scheduler).await {
        Ok(jobs) => Json(jobs).into_response(),
        Err(e) => failure(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

async fn job(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<String>) -> Response {
    let scheduler = match scheduler(&dashboard) {
        Ok(scheduler) => scheduler,
        Err(answer) => return answer.into_response(),
    };
    match crate::cluster::job_stats(scheduler, &id).await {
        Ok(Some(stats)) => Json(stats).into_response(),
        Ok(None) => failure(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => failure(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

async fn cancel_job(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_unmarked(&headers) {
        return refused;
    }
    let scheduler = match scheduler(&dashboard) {
        Ok(scheduler) => scheduler,
        Err(answer) => return answer.into_response(),
    };
    match crate::cluster::cancel_job(scheduler, &id).await {
        Ok(true) => {
            log::info!(target: "strata::dashboard", "job {id} cancelled from the dashboard");
            Json(serde_json::json!({ "cancelled": id })).into_response()
        }
        Ok(false) => failure(
            StatusCode::CONFLICT,
            format!("job {id} is not running (or not known)"),
        ),
        Err(e) => failure(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// One query: its figures, its plan with each operator's figures, and its cluster job's
/// stages and tasks.
#[derive(Serialize)]
struct Detail {
    query: QueryInfo,
    plan: Option<PlanNode>,
    job: Option<JobStats>,
}

async fn detail(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<u64>) -> Response {
    let Some(query) = dashboard.engine.monitor().get(id) else {
        return failure(StatusCode::NOT_FOUND, format!("no query {id}"));
    };
    let job = match query.cluster_job() {
        Some(job) => job.job_stats().await.ok().flatten(),
        None => None,
    };
    Json(Detail {
        query: query.info(),
        plan: query.plan(),
        job,
    })
    .into_response()
}

/// The query's plan, drawn by `draw`, as `content_type`.
fn plan_as(
    dashboard: &Dashboard,
    id: u64,
    draw: fn(&PlanNode) -> String,
    content_type: &'static str,
) -> Response {
    let Some(query) = dashboard.engine.monitor().get(id) else {
        return failure(StatusCode::NOT_FOUND, format!("no query {id}"));
    };
    match query.plan() {
        Some(plan) => ([(header::CONTENT_TYPE, content_type)], draw(&plan)).into_response(),
        None => failure(
            StatusCode::NOT_FOUND,
            format!("query {id} has no plan (it was not planned, or it is a command)"),
        ),
    }
}

async fn plan_svg(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<u64>) -> Response {
    plan_as(&dashboard, id, crate::plan_graph::svg, "image/svg+xml")
}

async fn plan_dot(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<u64>) -> Response {
    plan_as(
        &dashboard,
        id,
        crate::plan_graph::dot,
        "text/vnd.graphviz; charset=utf-8",
    )
}

/// The query page as one HTML file to keep, offered as a download.
async fn report(State(dashboard): State<Arc<Dashboard>>, Path(id): Path<u64>) -> Response {
    let Some(query) = dashboard.engine.monitor().get(id) else {
        return failure(StatusCode::NOT_FOUND, format!("no query {id}"));
    };
    let page = report::report(&query.info(), query.plan().as_ref(), STYLE);
    let file = format!("attachment; filename=\"strata-query-{id}.html\"");
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, file),
        ],
        page,
    )
        .into_response()
}

async fn cancel(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_unmarked(&headers) {
        return refused;
    }
    match dashboard.engine.monitor().cancel(id) {
        Ok(()) => {
            log::info!(target: "strata::dashboard", "query {id} cancelled from the dashboard");
            Json(serde_json::json!({ "cancelled": id })).into_response()
        }
        Err(e @ CancelRefused::Unknown) => failure(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => failure(StatusCode::CONFLICT, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_names_itself_and_marks_its_section() {
        for (path, name, section, main) in PAGES {
            let html = page(name, section, main);
            assert!(
                html.contains(&format!("<body data-page=\"{name}\">")),
                "{path}"
            );
            let (own, shared) = main.split_once(STAGES_MARK).unwrap_or((main, ""));
            assert!(html.contains(own.trim_end()), "{path}");
            assert!(html.contains(shared.trim_end()), "{path}");
            assert!(!html.contains(STAGES_MARK), "{path}");
            let stages = usize::from(main.contains(STAGES_MARK));
            assert_eq!(html.matches(STAGES).count(), stages, "{path}");
            let marked = html.matches(" class=\"here\"").count();
            assert_eq!(marked, usize::from(section.is_some()), "{path}");
            if let Some(section) = section {
                assert!(html.contains(&format!("<a href=\"{section}\" class=\"here\">")));
            }
            assert!(
                html.ends_with(
                    "<script src=\"/assets/dashboard.js\"></script>\n</body>\n</html>\n"
                )
            );
        }
    }
}
