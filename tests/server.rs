//! `strata serve` through real Flight SQL and PostgreSQL clients on real sockets: statements,
//! prepared statements with parameters, updates, the catalog's metadata, and errors.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo,
};
use arrow_flight::{FlightInfo, IpcMessage};
use futures::TryStreamExt;
use strata::Engine;
use strata::confine::Confinement;
use strata::datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use strata::datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use strata::server::{Auth, Listeners, Options, hash_secret, serve_flight, serve_flight_with};

#[path = "common/certificates.rs"]
mod certificates;
#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/skip.rs"]
mod skip;
use certificates::certificates;
use skip::skip;
use tonic::transport::Channel;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn engine() -> Arc<Engine> {
    let engine = Engine::builder()
        .target_partitions(2)
        .catalog(root().join("strata.toml"))
        .build()
        .await
        .expect("engine with the sample catalog");
    Arc::new(engine)
}

/// A server on a free port of the loopback address, and a client connected to it. The server
/// stops when the test's runtime ends.
async fn serve() -> (FlightSqlServiceClient<Channel>, Arc<Engine>) {
    serve_with(Options::default()).await
}

async fn serve_with(options: Options) -> (FlightSqlServiceClient<Channel>, Arc<Engine>) {
    let engine = engine().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve_flight(
        listener,
        engine.clone(),
        options,
        std::future::pending(),
    ));
    (connect(address).await, engine)
}

/// A client of the server at `address`. The listener is bound: connecting waits for nothing
/// but the handshake.
async fn connect(address: impl std::fmt::Display) -> FlightSqlServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the server");
    FlightSqlServiceClient::new(channel)
}

/// The gRPC status code of a client's error.
fn code(e: &arrow_flight::error::FlightError) -> tonic::Code {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => status.code(),
        other => panic!("{other}"),
    }
}

/// Every batch of every endpoint of `info`, and the schema the stream announced.
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> (Vec<RecordBatch>, Option<Arc<Schema>>) {
    let mut batches = Vec::new();
    let mut streamed = None;
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let mut stream = client.do_get(ticket).await.expect("do_get");
        while let Some(batch) = stream.try_next().await.expect("a batch") {
            batches.push(batch);
        }
        streamed = stream.schema().cloned();
    }
    (batches, streamed)
}

fn announced(info: &FlightInfo) -> Schema {
    Schema::try_from(IpcMessage(info.schema.clone())).expect("the FlightInfo's schema")
}

async fn local(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    engine.sql(sql).await.unwrap().collect().await.unwrap()
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test]
async fn statements_stream_what_the_engine_answers_with_the_schema_announced() {
    let (mut client, engine) = serve().await;
    let sql = "SELECT registration_state, count(*) AS n FROM violations \
               GROUP BY 1 ORDER BY n DESC, 1 LIMIT 5";
    let info = client.execute(sql.to_string(), None).await.unwrap();
    let schema = announced(&info);
    let (batches, streamed) = fetch(&mut client, info).await;
    assert_eq!(streamed.as_deref(), Some(&schema));
    let expected = local(&engine, sql).await;
    assert_eq!(
        datafusion_text(&batches),
        datafusion_text(&expected),
        "the server's answer differs from the engine's"
    );
    assert_eq!(rows(&batches), 5);

    // Large results arrive in many messages, and empty ones still carry their schema.
    let info = client
        .execute("SELECT value FROM generate_series(1, 300000)".into(), None)
        .await
        .unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 300_000);
    assert!(batches.len() > 1);
    let info = client
        .execute("SELECT plate_id FROM violations WHERE false".into(), None)
        .await
        .unwrap();
    let schema = announced(&info);
    let (batches, streamed) = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 0);
    assert_eq!(streamed.as_deref(), Some(&schema));
    assert_eq!(schema.field(0).name(), "plate_id");
}

fn datafusion_text(batches: &[RecordBatch]) -> String {
    strata::datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn prepared_statements_take_parameters() {
    let (mut client, engine) = serve().await;
    let sql =
        "SELECT count(*) FROM violations WHERE registration_state = ? AND violation_precinct > ?";
    let mut prepared = client.prepare(sql.to_string(), None).await.unwrap();
    // Preparing tells the result's columns and the parameters' types.
    assert_eq!(
        prepared.dataset_schema().unwrap().field(0).name(),
        "count(*)"
    );
    let types: Vec<DataType> = prepared
        .parameter_schema()
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(types, [DataType::Utf8View, DataType::Int64]);
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("state", DataType::Utf8, false),
            Field::new("precinct", DataType::Int64, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["NY"])),
            Arc::new(Int64Array::from(vec![50])),
        ],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    let served = batches[0].column(0).as_primitive::<Int64Type>().value(0);
    let expected = local(
        &engine,
        "SELECT count(*) FROM violations WHERE registration_state = 'NY' AND violation_precinct > 50",
    )
    .await;
    let expected = expected[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(served, expected);
    assert!(served > 0);

    // The same statement again with other values.
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("state", DataType::Utf8, false),
            Field::new("precinct", DataType::Int64, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["no such state"])),
            Arc::new(Int64Array::from(vec![0])),
        ],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 0);
    prepared.close().await.unwrap();

    // A statement that does not parse fails at once.
    let err = client
        .prepare("SELEC 1".into(), None)
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("syntax error at 1:1"), "{err}");

    // Too few values is the client's error, in one line.
    let mut prepared = client.prepare(sql.to_string(), None).await.unwrap();
    let err = prepared.execute().await.unwrap_err().to_string();
    assert!(
        err.contains("the statement has 2 parameters and 0 values were given"),
        "{err}"
    );
}

#[tokio::test]
async fn updates_change_what_later_statements_see() {
    let (mut client, _engine) = serve_with(Options {
        read_only: false,
        ..Options::default()
    })
    .await;
    let changed = client
        .execute_update(
            "CREATE VIEW ny AS SELECT * FROM violations WHERE registration_state = 'NY'".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(changed, 0);
    let info = client
        .execute("SELECT count(*) FROM ny".into(), None)
        .await
        .unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert!(batches[0].column(0).as_primitive::<Int64Type>().value(0) > 0);
}

#[tokio::test]
async fn the_catalog_is_discoverable() {
    let (mut client, engine) = serve().await;
    let info = client.get_catalogs().await.unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    let catalogs = batches[0].column(0).as_string::<i32>();
    assert!(catalogs.iter().flatten().any(|c| c == "datafusion"));

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("datafusion".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert!(rows(&batches) >= 1);

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("viol%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    let batch = &batches[0];
    let names: Vec<&str> = batch
        .column_by_name("table_name")
        .unwrap()
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    let mut expected: Vec<String> = engine
        .table_names()
        .into_iter()
        .filter(|n| n.starts_with("viol"))
        .collect();
    expected.sort();
    let mut listed: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(listed, expected);
    // Each table comes with its columns.
    let schemas = batch
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>();
    let at = names.iter().position(|n| *n == "violations").unwrap();
    let columns = Schema::try_from(IpcMessage(schemas.value(at).to_vec().into())).unwrap();
    assert!(columns.field_with_name("plate_id").is_ok());

    let info = client.get_table_types().await.unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 2);

    // The SQL types, as JDBC's getTypeInfo lists them; datasets have no keys.
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    let types: Vec<&str> = batches[0]
        .column_by_name("type_name")
        .unwrap()
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    for wanted in ["BIGINT", "VARCHAR", "DECIMAL", "DATE", "TIMESTAMP"] {
        assert!(types.contains(&wanted), "{types:?}");
    }
    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "violations".into(),
        })
        .await
        .unwrap();
    let schema = announced(&info);
    let (batches, streamed) = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 0);
    assert_eq!(streamed.as_deref(), Some(&schema));
    assert_eq!(schema.field(5).name(), "key_sequence");

    let info = client
        .get_sql_info(vec![SqlInfo::FlightSqlServerName])
        .await
        .unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 1);
    assert!(batches[0].column(1).is_valid(0));
}

#[tokio::test]
async fn errors_reach_the_client_in_one_line() {
    let (mut client, _engine) = serve().await;
    let err = client
        .execute("SELECT count(*)\nFROM violations WHERE".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("syntax error at 2:"), "{err}");
    let err = client
        .execute("SELECT * FROM violation".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean 'violations'"), "{err}");
    // The server goes on serving.
    let info = client.execute("SELECT 1".into(), None).await.unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 1);
}

#[test]
fn huge_and_deeply_nested_statements_fail_alone() {
    // The runtime `strata serve` runs on: its threads have 16 MiB of stack (the deepest
    // statement allowed needs more than the 2 MiB of a test's threads in a debug build).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .unwrap()
        .block_on(huge_and_deeply_nested_statements());
}

async fn huge_and_deeply_nested_statements() {
    let (mut client, _engine) = serve().await;
    // Larger than the largest message the server reads.
    let huge = format!("SELECT '{}' AS x", "x".repeat(70 << 20));
    let err = client.execute(huge, None).await.unwrap_err();
    assert_eq!(code(&err), tonic::Code::OutOfRange, "{err}");
    // Nested deeper than the parser goes.
    let nested = |n| format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
    let err = client
        .execute(nested(100_000), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nest more than 256 deep"), "{err}");
    let err = client
        .execute(nested(200), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nest more than 128 deep"), "{err}");
    // A chain of operators deeper than anything could walk without overflowing its stack.
    let chain = |n: usize| format!("SELECT 1{} AS n", " + 1".repeat(n));
    let err = client
        .execute(chain(20_000), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nest more than 256 deep"), "{err}");
    // The longest chain allowed, and a long list of values, are answered.
    let info = client.execute(chain(250), None).await.expect("a chain");
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        251
    );
    let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let values = format!(
        "SELECT count(*) FROM (VALUES ({})) AS t(v)",
        list.join("), (")
    );
    let info = client
        .execute(values, None)
        .await
        .expect("a long VALUES list");
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        20_000
    );
    // The server goes on serving.
    let info = client.execute("SELECT 1".into(), None).await.unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 1);
}

/// A Python client library the test needs, or why it cannot run: on CI (`CI` set) a missing
/// client is a failure, elsewhere the test says it skipped.
fn python_with(test: &str, module: &str) -> Option<()> {
    let found = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(());
    }
    skip(
        test,
        &format!("python3 cannot import {module} (pip install {module})"),
    );
    None
}

/// A client script's JSON lines, by their `step`.
fn steps(stdout: &str) -> std::collections::HashMap<String, serde_json::Value> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (v["step"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adbc_notebook_session_gets_the_engines_answers() {
    if python_with(
        "an_adbc_notebook_session_gets_the_engines_answers",
        "adbc_driver_flightsql",
    )
    .is_none()
    {
        return;
    }
    // The notebook signs in with a user name and password.
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[users.ana]\npassword = \"{}\"\n",
            hash_secret("notebook-pw")
        ),
    )
    .unwrap();
    let auth = Arc::new(Auth::load(&users, std::time::Duration::from_secs(600)).unwrap());
    let engine = engine().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve_flight_with(
        listener,
        engine.clone(),
        Options::default(),
        Some(auth),
        std::future::pending(),
    ));
    let script = root().join("tests/clients/flight_adbc.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .args([port.to_string().as_str(), "ana", "notebook-pw"])
        .output()
        .await
        .expect("run the ADBC client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the ADBC client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let steps = steps(&stdout);

    let top = local(
        &engine,
        "SELECT registration_state, count(*) AS n FROM violations GROUP BY 1 ORDER BY n DESC, 1 LIMIT 3",
    )
    .await;
    let states = top[0].column(0).as_string_view();
    let counts = top[0].column(1).as_primitive::<Int64Type>();
    let expected: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!([states.value(i), counts.value(i)]))
        .collect();
    let refused = steps["wrong_password"]["error"].as_str().unwrap_or("");
    assert!(refused.contains("wrong user name or password"), "{refused}");
    assert_eq!(steps["top"]["rows"], serde_json::Value::from(expected));

    let ny = local(
        &engine,
        "SELECT count(*) FROM violations WHERE registration_state = 'NY' AND violation_precinct > 50",
    )
    .await;
    let ny = ny[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(steps["params"]["rows"], serde_json::json!([[ny]]));

    assert_eq!(steps["large"]["rows"], 1_000_000);
    assert_eq!(steps["large"]["total"], 500_000_500_000i64);

    // Every table: the catalog's, the server's own `strata.queries` and the engine's
    // `strata.query_log`.
    let mut tables = engine.table_names();
    tables.extend(["queries".into(), "query_log".into()]);
    tables.sort();
    assert_eq!(steps["objects"]["tables"], serde_json::json!(tables));
    assert_eq!(steps["schema"]["columns"][1], "plate_id");

    // Cancelled while its rows were read: the reader stops with the driver's error.
    let cancel = &steps["cancel"];
    assert!(cancel["first"].as_u64().unwrap_or(0) > 0, "{cancel}");
    let error = cancel["error"].as_str().unwrap_or("").to_lowercase();
    assert!(error.contains("cancel"), "{cancel}");

    let error = steps["error"]["error"]
        .as_str()
        .expect("the bad query failed");
    assert!(error.contains("column 'nope' not found"), "{error}");
    assert_eq!(steps["after-error"]["rows"], serde_json::json!([[1]]));

    // The connection's session options and SET are its own; the other connection and the
    // server keep theirs.
    let setting = |name: &str| {
        engine
            .settings()
            .into_iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v)
    };
    const BATCH: &str = "datafusion.execution.batch_size";
    const ZONE: &str = "datafusion.execution.time_zone";
    let session = &steps["session"];
    assert_eq!(session["options"][BATCH], "99", "{session}");
    assert_eq!(session["options"]["catalog"], "datafusion", "{session}");
    assert_eq!(session["catalog"], "datafusion", "{session}");
    assert_eq!(session["schema"], "public", "{session}");
    assert_eq!(session["mine"], serde_json::json!([[BATCH, "99"]]));
    assert_eq!(
        session["theirs"],
        serde_json::json!([[BATCH, setting(BATCH)]])
    );
    assert_eq!(session["my_zone"], serde_json::json!([[ZONE, "+05:00"]]));
    assert_eq!(
        session["their_zone"],
        serde_json::json!([[ZONE, setting(ZONE)]])
    );
    let refused = session["refused"]
        .as_str()
        .expect("the runtime setting was refused");
    assert!(refused.contains("memory_limit"), "{refused}");
}

/// A query with no end in sight: rows from a series of ten billion.
const ENDLESS: &str = "SELECT value FROM generate_series(1, 10000000000)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_flight_info_stops_a_query_being_read() {
    use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
    use prost::Message;
    let (mut client, _engine) = serve().await;
    let info = client.execute(ENDLESS.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let first = stream.try_next().await.unwrap().expect("a first batch");
    assert!(first.num_rows() > 0);
    let action = Action {
        r#type: "CancelFlightInfo".into(),
        body: CancelFlightInfoRequest {
            info: Some(info.clone()),
        }
        .encode_to_vec()
        .into(),
    };
    let mut answers = client
        .inner_mut()
        .clone()
        .do_action(action)
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("a cancel result");
    let result = CancelFlightInfoResult::decode(answer.body.as_ref()).unwrap();
    assert_eq!(result.status, CancelStatus::Cancelled as i32);
    // What was under way drains, then the stream ends with the cancellation.
    let mut rows = first.num_rows();
    let error = loop {
        match stream.try_next().await {
            Ok(Some(batch)) => rows += batch.num_rows(),
            Ok(None) => panic!("the stream ended without an error after {rows} rows"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(error.contains("query cancelled"), "{error}");
    assert!(rows < 1_000_000_000, "{rows} rows");
    // Nothing is left to cancel.
    let action = Action {
        r#type: "CancelFlightInfo".into(),
        body: CancelFlightInfoRequest { info: Some(info) }
            .encode_to_vec()
            .into(),
    };
    let mut answers = client
        .inner_mut()
        .clone()
        .do_action(action)
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let result = CancelFlightInfoResult::decode(answer.body.as_ref()).unwrap();
    assert_eq!(result.status, CancelStatus::NotCancellable as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_the_time_limit_are_cancelled() {
    let options = Options {
        query_time: Some(std::time::Duration::from_millis(500)),
        ..Options::default()
    };
    let (mut client, _engine) = serve_with(options).await;
    let info = client
        .execute(format!("SELECT count(*) FROM ({ENDLESS})"), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let started = std::time::Instant::now();
    let mut stream = client.do_get(ticket).await.unwrap();
    let error = loop {
        match stream.try_next().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the endless count finished"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        error.contains("it ran longer than the server's limit of 0.5 s"),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // Short queries still run.
    let info = client.execute("SELECT 1".into(), None).await.unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_a_cluster_streams_the_executors_answers() {
    let engine = Engine::builder()
        .target_partitions(2)
        .catalog(root().join("strata.toml"))
        .cluster("local:2")
        .build()
        .await
        .expect("engine on a local cluster");
    assert_eq!(engine.runner().name(), "cluster");
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve_flight(
        listener,
        engine.clone(),
        Options::default(),
        std::future::pending(),
    ));
    let mut client = connect(address).await;
    let sql = "SELECT year, month, count(*) AS n FROM violations GROUP BY 1, 2 ORDER BY 1, 2";
    let info = client.execute(sql.into(), None).await.unwrap();
    let schema = announced(&info);
    let (batches, streamed) = fetch(&mut client, info).await;
    assert_eq!(streamed.as_deref(), Some(&schema));
    let local_engine = self::engine().await;
    let expected = local(&local_engine, sql).await;
    assert_eq!(datafusion_text(&batches), datafusion_text(&expected));
}

/// `strata serve` as a process: it prints where it listens, serves, and on SIGTERM stops
/// taking requests, lets a running query finish within the grace period, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_command_serves_until_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "serve",
            "--flight",
            "127.0.0.1:0",
            "--dashboard",
            "127.0.0.1:0",
            "--grace",
            "2",
        ])
        .current_dir(root())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata serve");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let address = line
        .split("grpc://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    assert!(line.contains("tables over Flight SQL"), "{line}");
    let mut dashboard = String::new();
    stderr.read_line(&mut dashboard).unwrap();
    let dashboard_port: u16 = dashboard
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no dashboard address in {dashboard:?}"));
    let mut client = connect(address).await;
    let info = client
        .execute("SELECT count(*) FROM violations".into(), None)
        .await
        .unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        7123
    );

    // An endless query is being read when the signal comes: it is cut after the grace period.
    let info = client.execute(ENDLESS.into(), None).await.unwrap();
    let mut stream = client
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    assert!(stream.try_next().await.unwrap().is_some());
    // The dashboard lists the clients' queries: the first finished, the endless one running.
    let listed = http_client::http(dashboard_port, "GET", "/api/queries", &[]).await;
    let states: Vec<(String, String)> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["sql"].as_str().unwrap().into(),
                q["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("SELECT count(*) FROM violations".into(), "finished".into()),
            (ENDLESS.to_string(), "running".to_string())
        ],
        "{}",
        listed.body
    );
    let signalled = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let waited = signalled.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(2) && waited < std::time::Duration::from_secs(20),
        "{waited:?}"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("cut off"), "{rest}");
    // Each query is logged when it starts and when it ends.
    assert!(
        rest.contains("query 1 started: SELECT count(*) FROM violations"),
        "{rest}"
    );
    assert!(rest.contains("query 1 finished after"), "{rest}");
    assert!(rest.contains("s, 1 rows"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_each_get_their_own_answers() {
    let (client, engine) = serve().await;
    let mut expected = Vec::new();
    for year in [2023, 2024] {
        let batches = local(
            &engine,
            &format!("SELECT count(*) FROM violations WHERE year = {year}"),
        )
        .await;
        expected.push(batches[0].column(0).as_primitive::<Int64Type>().value(0));
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut client = client.clone();
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..5 {
                let k = (i + j) % 2;
                let year = 2023 + k;
                let mut prepared = client
                    .prepare(
                        "SELECT count(*) FROM violations WHERE year = $1".into(),
                        None,
                    )
                    .await
                    .unwrap();
                let params = RecordBatch::try_new(
                    Arc::new(Schema::new(vec![Field::new("y", DataType::Int64, false)])),
                    vec![Arc::new(Int64Array::from(vec![year as i64]))],
                )
                .unwrap();
                prepared.set_parameters(params).unwrap();
                let info = prepared.execute().await.unwrap();
                let (batches, _) = fetch(&mut client, info).await;
                let got = batches[0].column(0).as_primitive::<Int64Type>().value(0);
                assert_eq!(got, expected[k], "client {i}, query {j}");
                prepared.close().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_read_only_server_runs_only_statements_that_read() {
    let (mut client, _engine) = serve().await;
    let dir = std::env::temp_dir().join(format!("strata-read-only-{}", std::process::id()));
    let copy = format!("COPY (SELECT 1) TO '{}/out.csv'", dir.display());
    let explain_copy = format!("EXPLAIN ANALYZE {copy}");
    let create = format!(
        "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '{}/'",
        dir.display()
    );
    for sql in [
        "CREATE VIEW v AS SELECT 1",
        "CREATE TABLE t AS SELECT 1",
        "DROP TABLE violations",
        "INSERT INTO violations SELECT * FROM violations",
        copy.as_str(),
        explain_copy.as_str(),
        create.as_str(),
    ] {
        let err = client
            .execute(sql.into(), None)
            .await
            .map(|_| ())
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("this server is read-only"),
            "{sql}: {message}"
        );
        let err = client
            .execute_update(sql.into(), None)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{sql}: {err}");
        let err = client
            .prepare(sql.into(), None)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{sql}: {err}");
    }
    assert!(!dir.exists(), "nothing was written");
    for sql in [
        "SELECT count(*) FROM violations",
        "EXPLAIN SELECT count(*) FROM violations",
        "SHOW TABLES",
        "DESCRIBE violations",
        "SHOW COLUMNS FROM violations",
    ] {
        let info = client.execute(sql.into(), None).await.unwrap();
        let (batches, _) = fetch(&mut client, info).await;
        assert!(rows(&batches) > 0, "{sql}");
    }
    // A client's own settings (see each_client_changes_settings_in_a_session_of_its_own).
    for sql in [
        "SET datafusion.execution.target_partitions = 1",
        "RESET datafusion.execution.target_partitions",
    ] {
        let info = client.execute(sql.into(), None).await.expect(sql);
        fetch(&mut client, info).await;
        client.execute_update(sql.into(), None).await.expect(sql);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_server_reaches_only_its_datasets_and_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (readable, writable, outside) = (
        dir.path().join("readable"),
        dir.path().join("writable"),
        dir.path().join("outside"),
    );
    for d in [&readable, &writable, &outside, &readable.join("dir")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(readable.join("a.csv"), "x\n1\n2\n").unwrap();
    std::fs::write(readable.join("dir/a.csv"), "x\n1\n").unwrap();
    std::fs::write(outside.join("secret.csv"), "x\n42\n").unwrap();
    std::os::unix::fs::symlink(&outside, readable.join("link")).unwrap();
    let confinement = Confinement::new()
        .read_root(&readable)
        .unwrap()
        .write_root(&writable)
        .unwrap();
    let engine = Engine::builder()
        .target_partitions(2)
        .catalog(root().join("strata.toml"))
        .confine(confinement)
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let options = Options {
        read_only: false,
        ..Options::default()
    };
    tokio::spawn(serve_flight(
        listener,
        Arc::new(engine),
        options,
        std::future::pending(),
    ));
    let mut client = connect(address).await;

    let (r, o) = (readable.display(), outside.display());
    let refused = [
        "SELECT * FROM '/etc/passwd'".to_string(),
        "SELECT * FROM read_csv('/etc/passwd')".into(),
        format!("SELECT * FROM read_csv('{o}/secret.csv')"),
        format!("SELECT * FROM '{r}/link/secret.csv'"),
        format!("SELECT * FROM '{r}/../outside/secret.csv'"),
        format!("SELECT * FROM read_csv(['{r}/a.csv', '{o}/secret.csv'])"),
        "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/'".into(),
        format!("COPY (SELECT 1 AS x) TO '{o}/out.csv'"),
        format!("COPY (SELECT 1 AS x) TO '{r}/out.csv'"),
        format!("EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{o}/out.csv'"),
        "SELECT * FROM 's3://elsewhere/x.parquet'".into(),
        "SELECT * FROM list_files('/etc')".into(),
        "SELECT * FROM parquet_metadata('/etc/passwd')".into(),
        "SET datafusion.runtime.temp_directory = '/tmp'".into(),
        "SET datafusion.catalog.location = '/etc'".into(),
    ];
    for sql in &refused {
        let err = client
            .execute(sql.clone(), None)
            .await
            .map(|_| ())
            .unwrap_err();
        let arrow_flight::error::FlightError::Tonic(status) = &err else {
            panic!("{sql}: {err}");
        };
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{sql}: {err}");
        assert!(
            status.message().starts_with("not allowed: "),
            "{sql}: {err}"
        );
    }
    assert!(!outside.join("out.csv").exists() && !readable.join("out.csv").exists());

    // The catalog's datasets, the read root, and writes under the write root.
    let w = writable.display();
    for (sql, expected) in [
        ("SELECT count(*) FROM violations".to_string(), 1),
        ("SELECT * FROM list_files('violations') LIMIT 1".into(), 1),
        (format!("SELECT * FROM '{r}/a.csv'"), 2),
        (format!("SELECT * FROM read_csv('{r}/a*.csv')"), 2),
        (format!("COPY (SELECT 1 AS x) TO '{w}/out.csv'"), 1),
        (format!("SELECT * FROM '{w}/out.csv'"), 1),
        (
            format!(
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{r}/dir/' OPTIONS ('format.has_header' 'true')"
            ),
            0,
        ),
        ("SELECT * FROM t".into(), 1),
    ] {
        let info = client.execute(sql.clone(), None).await.unwrap();
        let (batches, _) = fetch(&mut client, info).await;
        assert_eq!(rows(&batches), expected, "{sql}");
    }

    // A file swapped for a symlink after the table was made is refused by the file store.
    std::fs::remove_file(readable.join("dir/a.csv")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.csv"), readable.join("dir/a.csv")).unwrap();
    let mut message = String::new();
    match client.execute("SELECT * FROM t".into(), None).await {
        Err(e) => message = e.to_string(),
        Ok(info) => {
            for endpoint in info.endpoint {
                let mut stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
                while let Some(batch) = stream.try_next().await.transpose() {
                    if let Err(e) = batch {
                        message = e.to_string();
                        break;
                    }
                }
            }
        }
    }
    assert!(message.contains("outside the folders"), "{message}");
}

/// A Flight SQL server whose clients sign in as the users of `users`, their tokens living
/// `ttl`; its address.
async fn serve_signed_in(
    users: &std::path::Path,
    ttl: std::time::Duration,
) -> std::net::SocketAddr {
    let auth = Arc::new(Auth::load(users, ttl).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve_flight_with(
        listener,
        engine().await,
        Options::default(),
        Some(auth),
        std::future::pending(),
    ));
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sign_in_and_every_call_needs_their_token() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[users.alice]\npassword = \"{}\"\napi_tokens = [\"{}\"]\n",
            hash_secret("s3cret"),
            hash_secret("service-token-1")
        ),
    )
    .unwrap();
    let address = serve_signed_in(&users, std::time::Duration::from_secs(600)).await;
    let query = "SELECT count(*) FROM violations";

    // Without signing in, nothing runs; metadata is refused too.
    let mut anonymous = connect(address).await;
    let err = anonymous.execute(query.into(), None).await.unwrap_err();
    assert_eq!(code(&err), tonic::Code::Unauthenticated, "{err}");
    let err = anonymous.get_catalogs().await.unwrap_err();
    assert_eq!(code(&err), tonic::Code::Unauthenticated, "{err}");

    // A wrong password, an unknown user and a forged token are refused.
    let mut client = connect(address).await;
    let err = client.handshake("alice", "nope").await.unwrap_err();
    assert!(
        err.to_string().contains("wrong user name or password"),
        "{err}"
    );
    assert!(client.handshake("mallory", "s3cret").await.is_err());
    client.set_token("forged".into());
    let err = client.execute(query.into(), None).await.unwrap_err();
    assert_eq!(code(&err), tonic::Code::Unauthenticated, "{err}");

    // Signed in, the token carries every call, fetching the result included. (This client
    // sends a token it holds in place of the credentials, so it drops the forged one.)
    client.clear_token();
    client.handshake("alice", "s3cret").await.unwrap();
    let info = client.execute(query.into(), None).await.unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 1);

    // An API token works without a handshake.
    let mut service = connect(address).await;
    service.set_token("service-token-1".into());
    let info = service.execute(query.into(), None).await.unwrap();
    let (batches, _) = fetch(&mut service, info).await;
    assert_eq!(rows(&batches), 1);

    // The engine's query log names who ran each query.
    let log = "SELECT user_name FROM strata.query_log \
               WHERE sql = 'SELECT count(*) FROM violations'";
    let info = service.execute(log.into(), None).await.unwrap();
    let (batches, _) = fetch(&mut service, info).await;
    assert_eq!(
        datafusion_text(&batches),
        "+-----------+\n| user_name |\n+-----------+\n| alice     |\n| alice     |\n+-----------+"
    );

    // A token past its time is refused: here, tokens expire as they are given.
    let address = serve_signed_in(&users, std::time::Duration::ZERO).await;
    let mut late = connect(address).await;
    late.handshake("alice", "s3cret").await.unwrap();
    let err = late.execute(query.into(), None).await.unwrap_err();
    assert_eq!(code(&err), tonic::Code::Unauthenticated, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_wait_their_turn_and_oversized_results_are_refused() {
    let (mut client, _engine) = serve_with(Options {
        max_queries: Some(1),
        queue_timeout: std::time::Duration::from_secs(1),
        max_result_bytes: Some(1 << 20),
        ..Options::default()
    })
    .await;
    // A query whose result nobody has read yet holds the only place; the next one waits
    // for the queue timeout, then fails naming the limit.
    let first = client
        .execute("SELECT count(*) FROM violations".into(), None)
        .await
        .unwrap();
    let err = client.execute("SELECT 1".into(), None).await.unwrap_err();
    assert_eq!(code(&err), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("already runs 1 queries"), "{err}");
    // Reading the first result gives its place back.
    let (batches, _) = fetch(&mut client, first).await;
    assert_eq!(rows(&batches), 1);
    let info = client.execute("SELECT 1".into(), None).await.unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await.0), 1);

    // A result past the size limit fails and stops its query; the server goes on.
    let info = client
        .execute(
            "SELECT value FROM generate_series(1, 100000000)".into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let mut refused = None;
    while let Some(item) = stream.try_next().await.transpose() {
        if let Err(e) = item {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("the oversized result fails");
    assert!(
        err.to_string().contains("larger than this server's limit"),
        "{err}"
    );
    drop(stream);
    let info = client.execute("SELECT 1".into(), None).await.unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await.0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_queries_lists_running_and_recent_queries() {
    let (mut client, _engine) = serve().await;
    let info = client
        .execute("SELECT count(*) FROM violations".into(), None)
        .await
        .unwrap();
    fetch(&mut client, info).await;
    let _ = client
        .execute("SELECT nosuch FROM violations".into(), None)
        .await;
    let info = client
        .execute(
            "SELECT state || ':' || rows_sent || ':' || sql || ':' || coalesce(error, '') \
             FROM strata.queries WHERE seconds >= 0 ORDER BY id"
                .into(),
            None,
        )
        .await
        .unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    let lines: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let column =
                strata::datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            let strings = column.as_string::<i32>().clone();
            (0..strings.len())
                .map(|i| strings.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "finished:1:SELECT count(*) FROM violations:");
    assert!(
        lines[1].starts_with("failed:0:SELECT nosuch FROM violations:"),
        "{lines:?}"
    );
    assert!(lines[1].contains("nosuch"), "{lines:?}");
    // The query reading the table is itself running.
    assert!(lines[2].starts_with("running:0:SELECT state"), "{lines:?}");
}

/// A server with the sample catalog for Flight SQL and PostgreSQL clients, users from
/// `users` if given: the PostgreSQL port, and the engine.
async fn serve_postgres(users: Option<&std::path::Path>) -> (u16, Arc<Engine>) {
    let (port, _, engine) = serve_both(users).await;
    (port, engine)
}

/// [`serve_postgres`], with the Flight SQL address too.
async fn serve_both(users: Option<&std::path::Path>) -> (u16, std::net::SocketAddr, Arc<Engine>) {
    let auth = users.map(|u| Arc::new(Auth::load(u, std::time::Duration::from_secs(600)).unwrap()));
    let engine = engine().await;
    let flight = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flight_address = flight.local_addr().unwrap();
    let postgres = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = postgres.local_addr().unwrap().port();
    let listeners = Listeners {
        flight,
        postgres: Some(postgres),
        tls: None,
    };
    tokio::spawn(strata::server::serve(
        listeners,
        engine.clone(),
        Options::default(),
        auth,
        std::future::pending(),
    ));
    (port, flight_address, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clients_sign_in_and_get_the_engines_answers() {
    let test = "postgres_clients_sign_in_and_get_the_engines_answers";
    if python_with(test, "psycopg").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[users.ana]\npassword = \"{}\"\napi_tokens = [\"{}\"]\n",
            hash_secret("app-pw"),
            hash_secret("app-token")
        ),
    )
    .unwrap();
    let (port, engine) = serve_postgres(Some(&users)).await;
    let script = root().join("tests/clients/postgres_psycopg.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .args([port.to_string().as_str(), "ana", "app-pw", "app-token"])
        .output()
        .await
        .expect("run the psycopg client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the psycopg client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let steps = steps(&stdout);

    let refused = steps["wrong_password"]["error"].as_str().unwrap_or("");
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    assert_eq!(steps["token"]["rows"], serde_json::json!([[1]]));

    let top = local(
        &engine,
        "SELECT registration_state, count(*) AS n FROM violations GROUP BY 1 ORDER BY n DESC, 1 LIMIT 3",
    )
    .await;
    let states = top[0].column(0).as_string_view();
    let counts = top[0].column(1).as_primitive::<Int64Type>();
    let expected: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!([states.value(i), counts.value(i)]))
        .collect();
    assert_eq!(steps["top"]["rows"], serde_json::Value::from(expected));
    assert_eq!(
        steps["top"]["columns"],
        serde_json::json!(["registration_state", "n"])
    );
    let ny = local(
        &engine,
        "SELECT count(*) FROM violations WHERE registration_state = 'NY' AND violation_precinct > 50",
    )
    .await;
    let ny = ny[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(steps["params"]["rows"], serde_json::json!([[ny]]));

    for format in ["text", "binary"] {
        assert_eq!(steps[format]["same"], true, "{}", steps[format]);
    }
    assert_eq!(steps["error"]["sqlstate"], "42703", "{}", steps["error"]);
    let error = steps["error"]["error"].as_str().unwrap();
    assert!(error.contains("column 'nope' not found"), "{error}");
    assert_eq!(steps["write"]["sqlstate"], "42501", "{}", steps["write"]);
    assert_eq!(steps["after-error"]["rows"], serde_json::json!([[1]]));
    // The query log names the user who ran each query, whichever protocol it came by.
    assert_eq!(
        steps["log"]["rows"],
        serde_json::json!([["ana", "finished"]])
    );
    // A cancel request stops a query under way, with PostgreSQL's SQLSTATE and words.
    let cancel = &steps["cancel"];
    assert_eq!(cancel["sqlstate"], "57014", "{cancel}");
    let error = cancel["error"].as_str().unwrap();
    assert!(
        error.contains("canceling statement due to user request"),
        "{error}"
    );
    assert_eq!(steps["after-cancel"]["rows"], serde_json::json!([[2]]));
    let stream = &steps["stream"];
    assert_eq!(stream["sqlstate"], "57014", "{stream}");
    assert!(stream["rows"].as_u64().unwrap() >= 3, "{stream}");
    assert_eq!(
        steps["cancel-log"]["rows"],
        serde_json::json!([["cancelled"], ["cancelled"]]),
        "the log: {}",
        steps["cancel-log"]["entries"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_queries_and_reports_errors() {
    let test = "psql_runs_queries_and_reports_errors";
    if !psql_installed() {
        skip(test, "psql is not installed (Debian: postgresql-client)");
        return;
    }
    let (port, flight, engine) = serve_both(None).await;
    // PostgreSQL's catalog is for PostgreSQL clients: Flight SQL's metadata does not list it.
    let mut client = connect(flight).await;
    let info = client
        .get_db_schemas(CommandGetDbSchemas::default())
        .await
        .unwrap();
    let (batches, _) = fetch(&mut client, info).await;
    let schemas: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let names = b.column(1).as_string::<i32>();
            (0..names.len())
                .map(|i| names.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(schemas.contains(&"public".to_string()), "{schemas:?}");
    assert!(!schemas.contains(&"pg_catalog".to_string()), "{schemas:?}");
    let psql = |sql: &str| {
        let port = port.to_string();
        let sql = sql.to_string();
        async move {
            tokio::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "someone",
                    "-d",
                    "strata",
                ])
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-F",
                    ",",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    &sql,
                ])
                .output()
                .await
                .expect("run psql")
        }
    };
    let sql = "SELECT registration_state, count(*) AS n FROM violations \
               GROUP BY 1 ORDER BY n DESC, 1 LIMIT 5";
    let out = psql(sql).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batches = local(&engine, sql).await;
    let states = batches[0].column(0).as_string_view();
    let counts = batches[0].column(1).as_primitive::<Int64Type>();
    let expected: String = (0..5)
        .map(|i| format!("{},{}\n", states.value(i), counts.value(i)))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);

    // Two statements in one message: both run, in order.
    let out = psql("SELECT 1 AS a; SELECT 'two' AS b").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\ntwo\n");

    let out = psql("SELEC 1").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR:  syntax error"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = psql("SELECT * FROM no_such_table").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("table 'no_such_table' not found"),
        "{stderr}"
    );

    // psql's own commands read PostgreSQL's catalog: the tables, and a table's columns.
    let out = psql("\\dt").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected: Vec<String> = engine
        .table_names()
        .iter()
        .map(|t| format!("public,{t},table,postgres"))
        .collect();
    expected.sort();
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed, expected);
    let out = psql("\\d people").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let columns: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        columns,
        [
            "person_id bigint",
            "last_name text",
            "first_name text",
            "date_of_birth date"
        ]
    );
}

/// A server with both protocols on loopback, with `tls` and `options`: the Flight SQL address
/// and the PostgreSQL port.
async fn serve_tls(
    tls: Option<strata::server::Tls>,
    options: Options,
) -> (std::net::SocketAddr, u16, Arc<Engine>) {
    let engine = engine().await;
    let flight = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flight_address = flight.local_addr().unwrap();
    let postgres = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = postgres.local_addr().unwrap().port();
    let listeners = Listeners {
        flight,
        postgres: Some(postgres),
        tls,
    };
    tokio::spawn(strata::server::serve(
        listeners,
        engine.clone(),
        options,
        None,
        std::future::pending(),
    ));
    (flight_address, port, engine)
}

/// A Flight SQL client over TLS that trusts `dir`'s authority, with the client certificate
/// when `identify`.
async fn connect_tls(
    address: std::net::SocketAddr,
    dir: &std::path::Path,
    identify: bool,
) -> Result<FlightSqlServiceClient<Channel>, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if identify {
        let cert = std::fs::read(dir.join("client.pem")).unwrap();
        let key = std::fs::read(dir.join("client.key")).unwrap();
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(FlightSqlServiceClient::new(channel))
}

/// `SELECT count(*) FROM people` through `client`.
async fn count_people(client: &mut FlightSqlServiceClient<Channel>) -> Result<i64, String> {
    let info = client
        .execute("SELECT count(*) FROM people".into(), None)
        .await
        .map_err(|e| e.to_string())?;
    let (batches, _) = fetch(client, info).await;
    Ok(batches[0].column(0).as_primitive::<Int64Type>().value(0))
}

/// Whether `psql` can be run (Debian: postgresql-client).
fn psql_installed() -> bool {
    std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_ok()
}

/// The number of rows of `people`, as the engine answers.
async fn people(engine: &Engine) -> i64 {
    local(engine, "SELECT count(*) FROM people").await[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

/// `psql` running `sql` with the connection options `conninfo`.
async fn psql_with(conninfo: &str, sql: &str) -> std::process::Output {
    tokio::process::Command::new("psql")
        .args([conninfo, "-X", "-A", "-t", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .await
        .expect("run psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_encrypts_both_protocols_and_can_require_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let file = |name: &str| dir.path().join(name);

    // Files that do not make a TLS identity are refused with the file's name.
    for (cert, key, named, why) in [
        ("server.pem", "client.key", "client.key", "does not fit"),
        (
            "server.key",
            "server.key",
            "server.key",
            "no PEM certificate",
        ),
        ("nope.pem", "server.key", "nope.pem", "cannot read"),
    ] {
        let e = strata::server::Tls::load(&file(cert), &file(key), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(named) && e.contains(why), "{e}");
    }

    let tls = strata::server::Tls::load(&file("server.pem"), &file("server.key"), None).unwrap();
    let (flight, pg_port, engine) = serve_tls(Some(tls), Options::default()).await;
    let expected = people(&engine).await;
    let mut client = connect_tls(flight, dir.path(), false).await.unwrap();
    assert_eq!(count_people(&mut client).await, Ok(expected));
    // A client without TLS gets no answer.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{flight}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client = FlightSqlServiceClient::new(channel);
        assert!(count_people(&mut client).await.is_err());
    }

    let psql_installed = psql_installed();
    if psql_installed {
        let ca = file("ca.pem");
        let conninfo = format!(
            "host=localhost hostaddr=127.0.0.1 port={pg_port} user=someone dbname=strata \
             sslmode=verify-full sslrootcert={}",
            ca.display()
        );
        let out = psql_with(&conninfo, "SELECT count(*) FROM people").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expected.to_string()
        );
        let plain =
            format!("host=127.0.0.1 port={pg_port} user=someone dbname=strata sslmode=disable");
        let out = psql_with(&plain, "SELECT 1").await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("only encrypted connections"), "{stderr}");
    } else {
        skip(
            "tls_encrypts_both_protocols_and_can_require_client_certificates",
            "psql is not installed (Debian: postgresql-client)",
        );
    }

    // With an authority for clients, only clients with a certificate it signed get in.
    let tls = strata::server::Tls::load(
        &file("server.pem"),
        &file("server.key"),
        Some(&file("ca.pem")),
    )
    .unwrap();
    assert!(tls.requires_client_certificates());
    let (flight, pg_port, _) = serve_tls(Some(tls), Options::default()).await;
    let mut client = connect_tls(flight, dir.path(), true).await.unwrap();
    assert_eq!(count_people(&mut client).await, Ok(expected));
    match connect_tls(flight, dir.path(), false).await {
        Err(_) => {}
        Ok(mut anonymous) => assert!(count_people(&mut anonymous).await.is_err()),
    }
    if psql_installed {
        let base = format!(
            "host=localhost hostaddr=127.0.0.1 port={pg_port} user=someone dbname=strata \
             sslmode=verify-full sslrootcert={}",
            file("ca.pem").display()
        );
        let with_cert = format!(
            "{base} sslcert={} sslkey={}",
            file("client.pem").display(),
            file("client.key").display()
        );
        let out = psql_with(&with_cert, "SELECT count(*) FROM people").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expected.to_string()
        );
        let out = psql_with(&base, "SELECT 1").await;
        assert!(
            !out.status.success(),
            "a client without a certificate got in"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_are_refused_or_closed_and_clients_still_get_answers() {
    use tokio::io::AsyncReadExt;
    let options = Options {
        max_connections: Some(100),
        idle_time: Some(std::time::Duration::from_millis(500)),
        ..Options::default()
    };
    let (flight, pg_port, engine) = serve_tls(None, options).await;
    let pg = std::net::SocketAddr::from(([127, 0, 0, 1], pg_port));
    // 1,500 connections to each port that never send a byte.
    let mut idle = Vec::new();
    for address in [flight, pg] {
        for _ in 0..1500 {
            idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
    }
    // Each is refused (closed at once) or closed once idle: every read ends.
    let ends = futures::future::join_all(idle.iter_mut().map(|socket| async move {
        let mut buf = [0u8; 512];
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(60), socket.read(&mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }))
    .await;
    let open = ends.iter().filter(|closed| !**closed).count();
    assert_eq!(
        open, 0,
        "{open} idle connections were still open after 60 s"
    );
    drop(idle);
    // The server still answers, on both protocols.
    let mut client = connect(flight).await;
    let expected = people(&engine).await;
    assert_eq!(count_people(&mut client).await, Ok(expected));
    if psql_installed() {
        let conninfo = format!("host=127.0.0.1 port={pg_port} user=someone dbname=strata");
        let out = psql_with(&conninfo, "SELECT count(*) FROM people").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expected.to_string()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_with_a_clear_error() {
    let options = Options {
        max_connections: Some(2),
        ..Options::default()
    };
    let (flight, pg_port, _) = serve_tls(None, options).await;
    // Two Flight SQL connections are in; a third is closed before it can ask anything.
    let mut first = connect(flight).await;
    let mut second = connect(flight).await;
    assert!(count_people(&mut first).await.is_ok());
    assert!(count_people(&mut second).await.is_ok());
    let third = tonic::transport::Endpoint::from_shared(format!("http://{flight}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = third {
        let mut third = FlightSqlServiceClient::new(channel);
        assert!(count_people(&mut third).await.is_err());
    }
    drop((first, second));
    if !psql_installed() {
        return;
    }
    // Two idle PostgreSQL sessions fill the places; psql is told why it cannot connect.
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let conninfo = format!("host=127.0.0.1 port={pg_port} user=someone dbname=strata");
        let child = tokio::process::Command::new("psql")
            .args([conninfo.as_str(), "-X", "-A", "-t"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        sessions.push(child);
    }
    // Each session answers a query, so both are connected.
    for session in &mut sessions {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let stdin = session.stdin.as_mut().unwrap();
        stdin.write_all(b"SELECT 41 + 1;\n").await.unwrap();
        stdin.flush().await.unwrap();
        let stdout = session.stdout.as_mut().unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .unwrap();
        assert_eq!(line.trim(), "42");
    }
    let conninfo = format!("host=127.0.0.1 port={pg_port} user=someone dbname=strata");
    let out = psql_with(&conninfo, "SELECT 1").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too many connections"), "{stderr}");
}

/// The value `SHOW name` answers a client with.
async fn show(client: &mut FlightSqlServiceClient<Channel>, name: &str) -> String {
    let info = client
        .execute(format!("SHOW {name}"), None)
        .await
        .expect("SHOW");
    let (batches, _) = fetch(client, info).await;
    let value = batches[0].column_by_name("value").expect("a value column");
    let value = strata::datafusion::arrow::compute::cast(value, &DataType::Utf8).unwrap();
    value.as_string::<i32>().value(0).to_string()
}

/// One of Flight's session actions on `client`, carrying `cookie`: its result's body, and
/// the cookie the server set.
async fn session_action(
    client: &mut arrow_flight::flight_service_client::FlightServiceClient<Channel>,
    kind: &str,
    body: Vec<u8>,
    cookie: Option<&str>,
) -> (Vec<u8>, Option<String>) {
    let mut request = tonic::Request::new(arrow_flight::Action {
        r#type: kind.into(),
        body: body.into(),
    });
    if let Some(cookie) = cookie {
        request
            .metadata_mut()
            .insert("cookie", cookie.parse().unwrap());
    }
    let response = client.do_action(request).await.expect(kind);
    let set_cookie = response
        .metadata()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let result = response.into_inner().message().await.unwrap();
    (result.expect("a result").body.to_vec(), set_cookie)
}

/// The session options a `GetSessionOptions` on `client` answers with, as text.
async fn session_options(
    client: &mut arrow_flight::flight_service_client::FlightServiceClient<Channel>,
) -> std::collections::HashMap<String, String> {
    use prost::Message;
    use strata::server::session_messages::{GetSessionOptionsResult, OptionValue};
    let (body, _) = session_action(client, "GetSessionOptions", Vec::new(), None).await;
    GetSessionOptionsResult::decode(body.as_slice())
        .unwrap()
        .session_options
        .into_iter()
        .map(|(name, value)| match value.option_value {
            Some(OptionValue::StringValue(s)) => (name, s),
            other => panic!("{name}: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_changes_settings_in_a_session_of_its_own() {
    use arrow_flight::flight_service_client::FlightServiceClient;
    use prost::Message;
    use strata::server::session_messages::{
        CloseSessionResult, OptionValue, SessionOptionValue, SetSessionOptionsRequest,
        SetSessionOptionsResult, StringList,
    };
    const BATCH: &str = "datafusion.execution.batch_size";
    // A read-only server: a client's own settings are not the server's to protect.
    let (port, address, engine) = serve_both(None).await;
    let server_batch = engine
        .settings()
        .into_iter()
        .find(|(k, _)| k == BATCH)
        .and_then(|(_, v)| v)
        .unwrap();

    // SET on one connection is that connection's.
    let mut first = connect(address).await;
    let mut second = connect(address).await;
    let info = first
        .execute(format!("SET {BATCH} = 123"), None)
        .await
        .expect("SET on a read-only server");
    fetch(&mut first, info).await;
    assert_eq!(show(&mut first, BATCH).await, "123");
    assert_eq!(show(&mut second, BATCH).await, server_batch);
    let refused = first
        .execute("SET datafusion.runtime.memory_limit = '100G'".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("cannot be changed on this server"),
        "{refused}"
    );

    // Session options: set, read back, carried to another connection in the cookie, closed.
    let channel = |a| async move {
        tonic::transport::Endpoint::from_shared(format!("http://{a}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let mut raw = FlightServiceClient::new(channel(address).await);
    let text = |s: &str| SessionOptionValue {
        option_value: Some(OptionValue::StringValue(s.into())),
    };
    let request = SetSessionOptionsRequest {
        session_options: [
            ("batch_size".to_string(), text("77")),
            ("no_such_setting".to_string(), text("1")),
            ("datafusion.runtime.memory_limit".to_string(), text("1T")),
            ("catalog".to_string(), text("nowhere")),
            (
                "datafusion.execution.time_zone".to_string(),
                SessionOptionValue {
                    option_value: Some(OptionValue::StringListValue(StringList {
                        values: vec!["UTC".into()],
                    })),
                },
            ),
        ]
        .into(),
    };
    let (body, cookie) =
        session_action(&mut raw, "SetSessionOptions", request.encode_to_vec(), None).await;
    let mut errors: Vec<(String, i32)> = SetSessionOptionsResult::decode(body.as_slice())
        .unwrap()
        .errors
        .into_iter()
        .map(|(name, e)| (name, e.value))
        .collect();
    errors.sort();
    // 1: invalid name, 2: invalid value, 3: cannot be set.
    assert_eq!(
        errors,
        [
            ("catalog".to_string(), 2),
            ("datafusion.execution.time_zone".to_string(), 2),
            ("datafusion.runtime.memory_limit".to_string(), 3),
            ("no_such_setting".to_string(), 1),
        ]
    );
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.starts_with("arrow_flight_session_id="), "{cookie}");
    let options = session_options(&mut raw).await;
    assert_eq!(options.get(BATCH).map(String::as_str), Some("77"));
    assert_eq!(
        options.get("catalog").map(String::as_str),
        Some("datafusion")
    );
    assert_eq!(options.get("schema").map(String::as_str), Some("public"));

    let mut carried = connect(address).await;
    carried.set_header("cookie", &cookie);
    assert_eq!(show(&mut carried, BATCH).await, "77");
    assert_eq!(show(&mut second, BATCH).await, server_batch);

    let (body, _) = session_action(&mut raw, "CloseSession", Vec::new(), None).await;
    assert_eq!(
        CloseSessionResult::decode(body.as_slice()).unwrap().status,
        1
    );
    assert_eq!(show(&mut carried, BATCH).await, server_batch);
    assert!(!session_options(&mut raw).await.contains_key(BATCH));
    // The server's own settings never changed.
    assert_eq!(show(&mut first, BATCH).await, "123");
    assert!(
        engine
            .settings()
            .contains(&(BATCH.to_string(), Some(server_batch.clone())))
    );

    // A PostgreSQL connection's SET is its own too.
    if !psql_installed() {
        skip(
            "each_client_changes_settings_in_a_session_of_its_own",
            "psql is not installed (Debian: postgresql-client)",
        );
        return;
    }
    let conninfo = format!("host=127.0.0.1 port={port} user=strata sslmode=disable");
    let out = tokio::process::Command::new("psql")
        .args([conninfo.as_str(), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-c",
            &format!("SET {BATCH} = 5"),
            "-c",
            &format!("SHOW {BATCH}"),
        ])
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .await
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{BATCH}|5")), "{stdout}");
    let out = psql_with(&conninfo, &format!("SHOW {BATCH}")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{BATCH}|{server_batch}")),
        "{stdout}"
    );
}
