//! The dashboard over HTTP: its pages, its JSON while real queries run, Cancel, plans as
//! pictures, datasets, workers, reports, sign-in, and `strata.query_log`.

use std::sync::Arc;

use serde_json::Value;
use strata::Engine;
use strata::dashboard::{ACTION_HEADER, Dashboard, DashboardError, Serving};

#[path = "common/http_client.rs"]
mod http_client;
use http_client::Reply;

#[path = "common/skip.rs"]
mod skip;

#[path = "common/browser.rs"]
mod browser;

#[path = "common/certificates.rs"]
mod certificates;

/// One request to the dashboard (one listening on every address is reached through loopback).
async fn http(serving: &Serving, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    http_client::http(serving.address().port(), method, path, headers).await
}

async fn get(serving: &Serving, path: &str) -> Reply {
    http(serving, "GET", path, &[]).await
}

/// `n` CSV files of `rows` rows each in a new folder.
fn csv_files(n: usize, rows: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in 0..n {
        let mut text = String::from("id,name,amount\n");
        for r in 0..rows {
            text.push_str(&format!(
                "{},name-{},{}.5\n",
                f * rows + r,
                r % 97,
                r % 1000
            ));
        }
        std::fs::write(dir.path().join(format!("part-{f:03}.csv")), text).unwrap();
    }
    dir
}

/// An engine of 2 partitions with table `t` over `n` CSV files of `rows` rows (the folder
/// lives as long as the second value).
async fn engine_over_csv(n: usize, rows: usize) -> (Engine, tempfile::TempDir) {
    let engine = Engine::builder()
        .target_partitions(2)
        .build()
        .await
        .unwrap();
    let files = csv_files(n, rows);
    engine
        .register_location("t", &files.path().display().to_string())
        .await
        .unwrap();
    (engine, files)
}

/// Operators in a result's physical plan.
fn operators(result: &strata::QueryResult) -> usize {
    let plan = result.physical_plan().unwrap();
    strata::datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string()
        .lines()
        .count()
}

async fn serve(engine: &Engine) -> Serving {
    Dashboard::new(engine.new_session())
        .serve("127.0.0.1:0")
        .await
        .unwrap()
}

fn entry(list: &Value, id: u64) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("query {id} is not listed: {list}"))
}

#[tokio::test]
async fn a_running_query_shows_moving_progress_and_cancel_stops_it() {
    // One partition, and a result read batch by batch: the scan moves only as it is read.
    let engine = Engine::builder()
        .target_partitions(1)
        .batch_size(1024)
        .build()
        .await
        .unwrap();
    let files = csv_files(20, 2000);
    engine
        .register_location("t", &files.path().display().to_string())
        .await
        .unwrap();
    let serving = serve(&engine).await;

    let mut result = engine.sql("SELECT id, upper(name) FROM t").await.unwrap();
    let id = result.query_id().expect("the query is listed");
    result.next_batch().await.unwrap().unwrap();
    let first = entry(&get(&serving, "/api/queries").await.json(), id);
    assert_eq!(first["state"], "running", "{first}");
    assert_eq!(first["sql"], "SELECT id, upper(name) FROM t");
    assert_eq!(first["files"], 20, "{first}");
    for _ in 0..20 {
        result.next_batch().await.unwrap().unwrap();
    }
    let later = entry(&get(&serving, "/api/queries").await.json(), id);
    let (p1, p2) = (
        first["progress"].as_f64().unwrap(),
        later["progress"].as_f64().unwrap(),
    );
    assert!(
        p2 > p1 && p2 < 1.0,
        "progress {p1} then {p2}: {first} {later}"
    );
    assert!(later["rows"].as_u64().unwrap() > first["rows"].as_u64().unwrap());
    assert!(later["planning_ms"].as_f64().unwrap() > 0.0);
    assert!(later["peak_memory"].as_u64().is_some(), "{later}");

    // Cancel asks for the dashboard's header: another site's page cannot send it.
    let path = format!("/api/queries/{id}/cancel");
    assert_eq!(http(&serving, "POST", &path, &[]).await.status, 403);
    assert_eq!(get(&serving, &path).await.status, 405);
    let cancelled = http(&serving, "POST", &path, &[(ACTION_HEADER, "cancel")]).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let mut end = None;
    while let Some(next) = result.next_batch().await {
        if let Err(e) = next {
            end = Some(e);
            break;
        }
    }
    assert!(
        matches!(end, Some(strata::Error::Cancelled)),
        "the query's stream ends with Cancelled: {end:?}"
    );
    let detail = get(&serving, &format!("/api/queries/{id}")).await.json();
    assert_eq!(detail["query"]["state"], "cancelled", "{detail}");
    // Again: it has ended; an unknown query is not found.
    let again = http(&serving, "POST", &path, &[(ACTION_HEADER, "cancel")]).await;
    assert_eq!(again.status, 409);
    assert!(
        again.json()["error"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    let unknown = http(
        &serving,
        "POST",
        "/api/queries/999999/cancel",
        &[(ACTION_HEADER, "x")],
    )
    .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn a_finished_query_keeps_its_plan_with_each_operators_figures() {
    let (engine, _files) = engine_over_csv(4, 500).await;
    let serving = serve(&engine).await;
    let sql = "SELECT name, count(*) AS n, sum(amount) FROM t WHERE id % 3 = 0 \
               GROUP BY name ORDER BY n DESC, name LIMIT 5";
    let mut result = engine.sql(sql).await.unwrap();
    let id = result.query_id().unwrap();
    let operators = operators(&result);
    let rows: usize = result
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 5);

    let detail = get(&serving, &format!("/api/queries/{id}")).await.json();
    let query = &detail["query"];
    assert_eq!(query["state"], "finished", "{detail}");
    assert_eq!(query["rows"], 5);
    assert_eq!(query["progress"], 1.0);
    assert_eq!(query["rows_read"], 2000, "{query}");
    assert!(query["execution_ms"].as_f64().unwrap() > 0.0);
    // The plan as it ended: the scan produced every row, the root the 5 returned.
    let plan = &detail["plan"];
    assert_eq!(plan["output_rows"], 5, "{plan}");
    let mut scan = plan;
    while let Some(child) = scan["children"].get(0) {
        scan = child;
    }
    assert_eq!(scan["operator"], "DataSourceExec");
    assert_eq!(scan["output_rows"], 2000);

    let svg = get(&serving, &format!("/api/queries/{id}/plan.svg")).await;
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.body.starts_with("<svg "));
    assert_eq!(
        svg.body.matches("<g class=\"operator\"").count(),
        operators,
        "one box per operator of the plan:\n{}",
        svg.body
    );
    assert!(svg.body.contains("5 rows"));
    let dot = get(&serving, &format!("/api/queries/{id}/plan.dot")).await;
    assert_eq!(
        dot.body.matches(" -> ").count(),
        operators - 1,
        "{}",
        dot.body
    );

    // A statement that failed to plan has no plan, and says why it failed.
    let failed = engine.sql("SELECT nope FROM t").await.unwrap_err();
    let list = get(&serving, "/api/queries").await.json();
    let last = list.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["state"], "failed");
    assert_eq!(last["error"].as_str().unwrap(), failed.to_string());
    let none = get(&serving, &format!("/api/queries/{}/plan.svg", last["id"])).await;
    assert_eq!(none.status, 404);
    assert_eq!(get(&serving, "/api/queries/123456").await.status, 404);
}

#[tokio::test]
async fn the_pages_and_their_assets_come_from_the_binary() {
    let engine = Engine::new().await.unwrap();
    let serving = serve(&engine).await;
    let page = get(&serving, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("<script src=\"/assets/dashboard.js\">"));
    let query_page = get(&serving, "/queries/1").await;
    assert!(query_page.body.contains("data-page=\"query\""));
    let datasets_page = get(&serving, "/datasets").await;
    assert!(datasets_page.body.contains("data-page=\"datasets\""));
    let workers_page = get(&serving, "/workers").await;
    assert!(workers_page.body.contains("data-page=\"workers\""));
    let script = get(&serving, "/assets/dashboard.js").await;
    assert!(
        script
            .header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.body.contains("/api/queries"));
    let style = get(&serving, "/assets/dashboard.css").await;
    assert!(
        style
            .header("content-type")
            .unwrap()
            .starts_with("text/css")
    );
    // Nothing is fetched from elsewhere.
    for body in [
        &page.body,
        &query_page.body,
        &datasets_page.body,
        &workers_page.body,
        &script.body,
        &style.body,
    ] {
        // (The SVG namespace is a name, not something fetched.)
        let body = body.replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(!body.contains("http://") && !body.contains("https://"));
    }
    assert_eq!(get(&serving, "/nothing-here").await.status, 404);
}

#[tokio::test]
async fn off_loopback_the_dashboard_asks_users_to_sign_in() {
    let engine = Engine::new().await.unwrap();
    let refused = Dashboard::new(engine.new_session())
        .serve("0.0.0.0:0")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, DashboardError::NeedsSignIn { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("--users"), "{refused}");

    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let hash = strata::server::hash_secret("s3cret");
    std::fs::write(&users, format!("[users.ana]\npassword = \"{hash}\"\n")).unwrap();
    let auth =
        Arc::new(strata::server::Auth::load(&users, std::time::Duration::from_secs(60)).unwrap());
    let serving = Dashboard::new(engine.new_session())
        .with_auth(auth)
        .serve("0.0.0.0:0")
        .await
        .unwrap();
    let anonymous = get(&serving, "/api/queries").await;
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    };
    let wrong = http(
        &serving,
        "GET",
        "/",
        &[("Authorization", &basic("ana", "no"))],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let credentials = basic("ana", "s3cret");
    let right = http(
        &serving,
        "GET",
        "/api/queries",
        &[("Authorization", &credentials)],
    )
    .await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert!(right.json().is_array());
}

#[tokio::test]
async fn the_query_log_table_lists_every_sessions_queries() {
    let engine = Engine::new().await.unwrap();
    let other = engine.new_session();
    engine
        .sql("SELECT 1 AS one")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    other
        .sql("SELECT * FROM generate_series(1, 10)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let failed = other.sql("SELECT nope").await.unwrap_err().to_string();
    // A result dropped before its end counts as cancelled.
    drop(
        engine
            .sql("SELECT * FROM generate_series(1, 100000)")
            .await
            .unwrap(),
    );
    let log = engine
        .sql(
            "SELECT concat_ws('|', sql, state, rows, coalesce(error, ''), session) \
             FROM strata.query_log WHERE sql NOT LIKE '%query_log%' ORDER BY id",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let lines: Vec<String> = log
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_any();
            let strings = column
                .downcast_ref::<strata::datafusion::arrow::array::StringArray>()
                .unwrap();
            strings
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let here = engine.session().session_id();
    let there = other.session().session_id();
    assert_ne!(here, there);
    assert_eq!(
        lines[..2],
        [
            format!("SELECT 1 AS one|finished|1||{here}"),
            format!("SELECT * FROM generate_series(1, 10)|finished|10||{there}"),
        ]
    );
    assert_eq!(lines[2], format!("SELECT nope|failed|0|{failed}|{there}"));
    assert!(
        lines[3].starts_with("SELECT * FROM generate_series(1, 100000)|cancelled|0|")
            && lines[3].contains("dropped"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 4, "{lines:?}");
}

async fn batch_size_setting(engine: &Engine) -> String {
    let batches = engine
        .sql(
            "SELECT value FROM information_schema.df_settings \
              WHERE name = 'datafusion.execution.batch_size'",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    strata::datafusion::arrow::util::display::array_value_to_string(batches[0].column(0), 0)
        .unwrap()
}

/// The one text value of a statement's result.
async fn text_of(engine: &Engine, sql: &str) -> String {
    let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].schema().field(0).name(), "plan");
    let column = batches[0].column(0).as_any();
    let strings = column
        .downcast_ref::<strata::datafusion::arrow::array::StringArray>()
        .unwrap();
    assert_eq!(batches[0].num_rows(), 1);
    strings.value(0).to_string()
}

#[tokio::test]
async fn explain_draws_plans_as_svg_and_dot_with_figures_after_analyze() {
    let (engine, _files) = engine_over_csv(3, 100).await;
    let query = "SELECT name, sum(amount) FROM t GROUP BY name ORDER BY name";
    let result = engine.sql(query).await.unwrap();
    let operators = operators(&result);
    drop(result);

    // Without ANALYZE nothing runs: the boxes show no rows.
    let svg = text_of(&engine, &format!("EXPLAIN FORMAT svg {query}")).await;
    assert!(svg.starts_with("<svg "), "{svg}");
    assert_eq!(
        svg.matches("<g class=\"operator\"").count(),
        operators,
        "{svg}"
    );
    assert!(!svg.contains(" rows"), "{svg}");
    let dot = text_of(&engine, &format!("EXPLAIN (FORMAT dot) {query}")).await;
    assert!(dot.starts_with("digraph plan {"), "{dot}");
    assert_eq!(dot.matches(" -> ").count(), operators - 1, "{dot}");

    // With ANALYZE the query runs: the scan read 300 rows, the root returned 97 groups.
    let analyzed = text_of(&engine, &format!("EXPLAIN ANALYZE FORMAT svg {query}")).await;
    assert_eq!(analyzed.matches("<g class=\"operator\"").count(), operators);
    assert!(analyzed.contains(">300 rows"), "{analyzed}");
    assert!(analyzed.contains(">97 rows"), "{analyzed}");

    // A server asks whether it only reads, and what it returns, before running it.
    let drawing = format!("EXPLAIN ANALYZE FORMAT svg {query}");
    assert!(engine.only_reads(&drawing).unwrap());
    assert!(
        !engine
            .only_reads("EXPLAIN ANALYZE FORMAT svg INSERT INTO t VALUES (1, 'a', 2.5)")
            .unwrap()
    );
    let described = engine.describe(&drawing).await.unwrap();
    assert_eq!(described.schema.field(0).name(), "plan");

    // Errors are the query's own; statements without a plan say so.
    let err = engine
        .sql("EXPLAIN FORMAT svg SELECT nope FROM t")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("column 'nope' not found"), "{err}");
    let err = engine
        .sql("EXPLAIN ANALYZE FORMAT svg SET datafusion.execution.batch_size = 10")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not one"), "{err}");
    // Nothing to draw: a syntax error at the statement's end, not DataFusion's list of
    // its own formats.
    let err = engine.sql("EXPLAIN (FORMAT svg)").await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("syntax error at 1:21: Expected: a query to draw"),
        "{err}"
    );
    let batch_size = batch_size_setting(&engine).await;
    assert_ne!(batch_size, "10", "the statement did not run");
}

#[tokio::test]
async fn the_datasets_page_lists_files_bytes_partitions_and_schemas() {
    // A hive-partitioned CSV dataset: year=2023 (2 files), year=2024/region=eu, region=us.
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = 0u64;
    for (i, part) in ["year=2023", "year=2023", "year=2024", "year=2024"]
        .iter()
        .enumerate()
    {
        let region = if i % 2 == 0 { "eu" } else { "us" };
        let folder = dir.path().join(part).join(format!("region={region}"));
        std::fs::create_dir_all(&folder).unwrap();
        let text = format!("id,amount\n{i},1.5\n{},2.5\n", i + 10);
        sizes += text.len() as u64;
        std::fs::write(folder.join(format!("f{i}.csv")), text).unwrap();
    }
    // A file of another format beside them is not the dataset's.
    std::fs::write(dir.path().join("README.txt"), "notes").unwrap();
    let engine = Engine::new().await.unwrap();
    engine
        .register_location("sales", &dir.path().display().to_string())
        .await
        .unwrap();
    engine
        .sql("CREATE TABLE made AS SELECT 1 AS x, 'a' AS y")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    engine
        .sql("CREATE VIEW big AS SELECT * FROM sales WHERE amount > 2")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let serving = serve(&engine).await;

    let list = get(&serving, "/api/datasets").await.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["big", "made", "sales"], "{list}");
    let sales = &list[2];
    assert_eq!(sales["kind"], "dataset");
    assert_eq!(sales["format"], "csv");
    assert_eq!(sales["files"], 4, "{sales}");
    assert_eq!(sales["bytes"], sizes);
    assert_eq!(sales["partitions"], 4, "{sales}");
    let keys: Vec<(String, u64)> = sales["partition_columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["distinct_values"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, [("year".into(), 2), ("region".into(), 2)]);
    let columns: Vec<&str> = sales["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["id", "amount", "year", "region"]);
    assert!(sales["error"].is_null());
    assert_eq!(list[1]["kind"], "table");
    assert_eq!(list[1]["columns"][1]["data_type"], "Utf8");
    assert_eq!(list[0]["kind"], "view");

    // Files added since are listed the next time; a dataset whose folder went away says so
    // and the others are still listed.
    std::fs::write(
        dir.path().join("year=2024/region=eu/late.csv"),
        "id,amount\n99,9.5\n",
    )
    .unwrap();
    let again = get(&serving, "/api/datasets").await.json();
    assert_eq!(again[2]["files"], 5, "{again}");
    let folder = dir.path().display().to_string();
    drop(dir);
    let gone = get(&serving, "/api/datasets").await.json();
    assert_eq!(gone.as_array().unwrap().len(), 3);
    let error = gone[2]["error"].as_str().unwrap_or_default();
    assert!(error.contains(&folder), "{gone}");
    assert!(gone[2]["files"].is_null());
}

#[tokio::test]
async fn the_workers_page_shows_this_process_for_a_local_engine() {
    let engine = Engine::builder()
        .target_partitions(3)
        .memory_limit(64 << 20)
        .build()
        .await
        .unwrap();
    let serving = serve(&engine).await;
    let idle = get(&serving, "/api/workers").await.json();
    assert_eq!(idle["kind"], "local", "{idle}");
    let worker = &idle["workers"][0];
    assert_eq!(worker["state"], "alive");
    assert_eq!(worker["slots"], 3);
    assert_eq!(worker["running"], 0);
    assert_eq!(worker["memory_total"], 64 << 20);

    let mut result = engine
        .sql("SELECT value % 7 AS k, count(*) FROM generate_series(1, 100000000) GROUP BY 1")
        .await
        .unwrap();
    let busy = get(&serving, "/api/workers").await.json();
    assert_eq!(busy["workers"][0]["running"], 1, "{busy}");
    result.cancel_handle().cancel();
    while let Some(Ok(_)) = result.next_batch().await {}
    drop(result);
    let after = get(&serving, "/api/workers").await.json();
    assert_eq!(after["workers"][0]["running"], 0, "{after}");
}

#[tokio::test]
async fn a_query_page_exports_as_one_self_contained_html_file() {
    let (engine, _files) = engine_over_csv(2, 100).await;
    let serving = serve(&engine).await;
    let sql = "SELECT name, count(*) FROM t WHERE name < 'name-5' GROUP BY name";
    let mut result = engine.sql(sql).await.unwrap();
    let id = result.query_id().unwrap();
    let operators = operators(&result);
    result.collect().await.unwrap();

    let report = get(&serving, &format!("/api/queries/{id}/report.html")).await;
    assert_eq!(report.status, 200);
    assert!(
        report
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(
        report.header("content-disposition"),
        Some(format!("attachment; filename=\"strata-query-{id}.html\"").as_str())
    );
    let page = &report.body;
    // The SQL, escaped; its state and figures; the plan with one box per operator.
    assert!(page.contains("name &lt; &#39;name-5&#39;"), "{page}");
    assert!(page.contains("<span class=\"state finished\">finished</span>"));
    assert!(page.contains("<dt>Rows read</dt><dd>200</dd>"), "{page}");
    assert_eq!(page.matches("<g class=\"operator\"").count(), operators);
    // Self-contained: styles inlined, nothing loaded from anywhere, no script.
    assert!(page.contains("<style>") && page.contains(".plan {"));
    for outside in ["<script", "<link", " src=", "url(", "@import"] {
        assert!(!page.contains(outside), "{outside} in the report");
    }
    // A query that failed exports its error and no plan.
    let failed = engine.sql("SELECT missing FROM t").await.unwrap_err();
    let last = get(&serving, "/api/queries").await.json();
    let last_id = last.as_array().unwrap().last().unwrap()["id"]
        .as_u64()
        .unwrap();
    let report = get(&serving, &format!("/api/queries/{last_id}/report.html")).await;
    assert!(failed.to_string().contains("missing"));
    assert!(
        report.body.contains("<p class=\"error\">"),
        "{}",
        report.body
    );
    assert!(report.body.contains("missing"));
    assert!(!report.body.contains("<svg"));
    assert_eq!(
        get(&serving, "/api/queries/424242/report.html")
            .await
            .status,
        404
    );
}

/// With the server's certificate the pages and their JSON are served over HTTPS only, and
/// still ask for sign-in; `strata serve --tls-cert` serves its dashboard so.
#[tokio::test]
async fn with_a_certificate_the_pages_are_served_over_https() {
    let dir = tempfile::tempdir().unwrap();
    certificates::certificates(dir.path());
    let tls = strata::server::Tls::load(
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
        None,
    )
    .unwrap();
    let users = dir.path().join("users.toml");
    let hash = strata::server::hash_secret("s3cret");
    std::fs::write(&users, format!("[users.ana]\npassword = \"{hash}\"\n")).unwrap();
    let auth =
        Arc::new(strata::server::Auth::load(&users, std::time::Duration::from_secs(60)).unwrap());
    let engine = Engine::new().await.unwrap();
    engine
        .sql("SELECT 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let serving = Dashboard::new(engine.new_session())
        .with_auth(auth)
        .with_tls(tls)
        .serve("127.0.0.1:0")
        .await
        .unwrap();
    assert!(
        serving.url().starts_with("https://127.0.0.1:"),
        "{}",
        serving.url()
    );
    let port = serving.address().port();
    let ca = dir.path().join("ca.pem");
    let anonymous = http_client::https(port, &ca, "GET", "/", &[]).await;
    assert_eq!(anonymous.status, 401);
    let credentials = {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode("ana:s3cret");
        format!("Basic {encoded}")
    };
    let signed_in = [("Authorization", credentials.as_str())];
    let page = http_client::https(port, &ca, "GET", "/", &signed_in).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-page=\"queries\""), "{}", page.body);
    let listed = http_client::https(port, &ca, "GET", "/api/queries", &signed_in).await;
    assert_eq!(listed.json()[0]["sql"], "SELECT 1", "{}", listed.body);
    // Plain HTTP on the same port gets no page.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
}

/// The pages in a real browser (tests/clients/dashboard_browser.py): a running query's
/// progress bar moves and its Cancel button cancels it, a finished query's plan is drawn with
/// one box per operator, the Datasets and Workers pages list what the engine has.
/// Screenshots go to `dashboard-screenshots` in Cargo's scratch folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_progress_moves_cancel_cancels_and_the_plan_is_drawn() {
    if !browser::browser_or_skip("in_a_browser_progress_moves_cancel_cancels_and_the_plan_is_drawn")
    {
        return;
    }
    // One partition, read at a steady pace: the scan advances only as it is read.
    let engine = Engine::builder()
        .target_partitions(1)
        .batch_size(1000)
        .build()
        .await
        .unwrap();
    let files = csv_files(300, 2000);
    engine
        .register_location("t", &files.path().display().to_string())
        .await
        .unwrap();
    let serving = serve(&engine).await;

    let finished_sql = "SELECT name, count(*) FROM t WHERE id < 5000 GROUP BY name";
    let mut finished = engine.sql(finished_sql).await.unwrap();
    let finished_id = finished.query_id().unwrap();
    let operators = operators(&finished);
    finished.collect().await.unwrap();

    let mut running = engine.sql("SELECT id, upper(name) FROM t").await.unwrap();
    let running_id = running.query_id().unwrap();
    let reader = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(50));
        loop {
            ticks.tick().await;
            match running.next_batch().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    });

    let scenarios = browser::scenarios(
        "local",
        &serving.url(),
        &[
            running_id.to_string(),
            finished_id.to_string(),
            operators.to_string(),
        ],
    );
    let output = tokio::process::Command::from(scenarios)
        .output()
        .await
        .expect("run the browser scenarios");
    browser::check(
        &output,
        &[
            "queries-running",
            "queries-cancelled",
            "query-plan",
            "datasets",
            "workers",
        ],
    );
    // The browser's Cancel ended the query's stream, well before its end.
    let end = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .expect("the cancelled query ends")
        .unwrap();
    assert!(matches!(end, Some(strata::Error::Cancelled)), "{end:?}");
}
