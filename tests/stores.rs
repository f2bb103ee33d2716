//! Object stores against real servers on loopback: S3 (moto), Azure Blob (Azurite) and plain
//! HTTP (a small server in this file). Each server binds port 0 and reports the port it got;
//! a test whose server cannot be started is skipped and says why.

use std::path::PathBuf;
use std::time::Duration;

use strata::datafusion::arrow::array::{AsArray, RecordBatch};
use strata::datafusion::arrow::datatypes::Int64Type;
use strata::{Engine, EngineBuilder};

#[path = "common/skip.rs"]
mod skip;
use skip::skip;
#[path = "common/test_servers.rs"]
mod test_servers;
use test_servers::{http, start_azurite, start_moto};
#[path = "common/file_server.rs"]
mod file_server;
use file_server::{Fault, serve_files};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn rows(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    match engine.sql(sql).await {
        Ok(mut r) => r.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}")),
        Err(e) => panic!("{sql}: {e}"),
    }
}

async fn int(engine: &Engine, sql: &str) -> i64 {
    let b = rows(engine, sql).await;
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn text(engine: &Engine, sql: &str) -> String {
    let b = rows(engine, sql).await;
    let col = b[0].column(0);
    strata::datafusion::arrow::util::display::array_value_to_string(col, 0).unwrap()
}

fn catalog_engine() -> EngineBuilder {
    Engine::builder()
        .target_partitions(2)
        .catalog(root().join("strata.toml"))
        .store_timeout(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_every_format_globs_partitions_and_catalog() {
    let moto = match start_moto() {
        Ok(s) => s,
        Err(e) => {
            skip(
                "s3_every_format_globs_partitions_and_catalog",
                &format!("the S3 test server (python3 -m moto.server) is unavailable: {e}"),
            );
            return;
        }
    };
    let port = moto.port;
    assert_eq!(http(port, "PUT", "/lake", &[], b""), 200, "create bucket");
    let endpoint = format!("http://127.0.0.1:{port}");
    let engine = catalog_engine()
        .store(
            "s3://lake",
            [
                ("endpoint", endpoint.clone()),
                ("access_key_id", "test".into()),
                ("secret_access_key", "test".into()),
                ("region", "us-east-1".into()),
            ],
        )
        .build()
        .await
        .unwrap();

    // Writing: hive-partitioned Parquet and every text format, through COPY.
    rows(
        &engine,
        "COPY violations TO 's3://lake/violations/' (FORMAT parquet, PARTITION_BY (year, month))",
    )
    .await;
    rows(&engine, "COPY (SELECT * FROM violations WHERE year = 2023) TO 's3://lake/csv/v.csv.gz' (FORMAT csv, COMPRESSION gzip)").await;
    rows(&engine, "COPY (SELECT * FROM violations WHERE year = 2023) TO 's3://lake/csv/v.csv.zst' (FORMAT csv, COMPRESSION zstd)").await;
    rows(
        &engine,
        "COPY events TO 's3://lake/json/events.json' (FORMAT json)",
    )
    .await;
    rows(
        &engine,
        "COPY violations_arrow TO 's3://lake/arrow/v.arrow' (FORMAT arrow)",
    )
    .await;
    // Files put as they are: Avro (which COPY does not write) and the two people CSVs.
    for (key, file) in [
        ("avro/v.avro", "data/formats/violations_2023_01.avro"),
        ("people/people-1.csv", "data/people/people-1.csv"),
        ("people/people-2.csv", "data/people/people-2.csv"),
    ] {
        let body = std::fs::read(root().join(file)).unwrap();
        assert_eq!(http(port, "PUT", &format!("/lake/{key}"), &[], &body), 200);
    }

    // Reading back: the same rows through globs, directories and the read_* functions.
    let total = 7123;
    assert_eq!(
        int(
            &engine,
            "SELECT count(*) FROM 's3://lake/violations/**/*.parquet'"
        )
        .await,
        total
    );
    assert_eq!(
        int(
            &engine,
            "SELECT count(*) FROM read_parquet('s3://lake/violations/')"
        )
        .await,
        total
    );
    assert_eq!(
        int(&engine, "SELECT count(*) FROM (SELECT * FROM 's3://lake/violations/' EXCEPT SELECT * FROM violations)").await,
        0
    );
    assert_eq!(
        text(
            &engine,
            "SELECT arrow_typeof(month) FROM 's3://lake/violations/' LIMIT 1"
        )
        .await,
        "Int64"
    );
    let y2023 = int(&engine, "SELECT count(*) FROM violations WHERE year = 2023").await;
    assert_eq!(
        int(
            &engine,
            "SELECT count(*) FROM read_csv('s3://lake/csv/*.csv.gz')"
        )
        .await,
        y2023
    );
    assert_eq!(
        int(&engine, "SELECT count(*) FROM 's3://lake/csv/v.csv.zst'").await,
        y2023
    );
    assert_eq!(
        int(
            &engine,
            "SELECT count(*) FROM read_json('s3://lake/json/*.json')"
        )
        .await,
        200
    );
    assert_eq!(
        text(
            &engine,
            "SELECT payload.device.os FROM 's3://lake/json/events.json' WHERE event_id = 1"
        )
        .await,
        "web"
    );
    assert_eq!(
        int(
            &engine,
            "SELECT count(*) FROM read_arrow('s3://lake/arrow/v.arrow')"
        )
        .await,
        176
    );
    assert_eq!(
        int(
            &engine,
            "SELECT count(*) FROM read_avro('s3://lake/avro/*.avro')"
        )
        .await,
        176
    );
    assert_eq!(
        int(
            &engine,
            "SELECT count(*) FROM 's3://lake/people/people-[12].csv'"
        )
        .await,
        80
    );
    assert_eq!(
        int(
            &engine,
            "SELECT count(*) FROM 's3://lake/people/people-?.csv'"
        )
        .await,
        80
    );
    assert_eq!(int(&engine, "SELECT count(*) FROM read_csv(['s3://lake/people/people-1.csv', 's3://lake/people/people-2.csv'])").await, 80);
    let e = engine
        .sql(
            "SELECT * FROM read_csv(['s3://lake/people/people-1.csv', 'data/people/people-2.csv'])",
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("must be in one store"), "{e}");

    // Partition pruning on the store: only month 7 of 2024 is listed for reading.
    let files_in_partition = int(
        &engine,
        "SELECT count(*) FROM list_files('s3://lake/violations/') WHERE partition = 'year=2024/month=7'",
    )
    .await;
    let mut r = engine
        .sql("SELECT sum(length(plate_id)) FROM 's3://lake/violations/' WHERE year = 2024 AND month = 7")
        .await
        .unwrap();
    r.collect().await.unwrap();
    assert_eq!(r.scan_stats().files as i64, files_in_partition);
    assert!(files_in_partition >= 1);

    // A catalog file declares S3 tables and takes credentials from the environment.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("s3.toml");
    // SAFETY: this test sets its own variables before any other thread reads them.
    unsafe {
        std::env::set_var("STRATA_TEST_S3_KEY", "test");
        std::env::set_var("STRATA_TEST_S3_SECRET", "test");
    }
    std::fs::write(
        &catalog,
        format!(
            "[stores.\"s3://lake\"]\nendpoint = \"{endpoint}\"\naccess_key_id = \"${{STRATA_TEST_S3_KEY}}\"\nsecret_access_key = \"${{STRATA_TEST_S3_SECRET}}\"\n\n[tables.lake_violations]\nlocation = \"s3://lake/violations/\"\npartition_columns = {{ year = \"int\" }}\n"
        ),
    )
    .unwrap();
    let from_catalog = Engine::builder().catalog(&catalog).build().await.unwrap();
    assert_eq!(
        int(
            &from_catalog,
            "SELECT count(*) FROM lake_violations WHERE year = 2024"
        )
        .await,
        total - y2023
    );
    assert_eq!(
        text(
            &from_catalog,
            "SELECT arrow_typeof(year) FROM lake_violations LIMIT 1"
        )
        .await,
        "Int32"
    );

    // `strata convert`: gzip CSV files to hive-partitioned Parquet on S3, with the store's
    // settings and credentials from the same catalog file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--catalog")
        .arg(&catalog)
        .arg("convert")
        .arg(root().join("data/violations_csv"))
        .arg("s3://lake/converted/")
        .args(["--partition-by", "year,month"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("read back {total} rows")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        int(
            &from_catalog,
            "SELECT count(*) FROM 's3://lake/converted/' WHERE year = 2024 AND month = 7"
        )
        .await,
        int(
            &from_catalog,
            "SELECT count(*) FROM lake_violations WHERE year = 2024 AND month = 7"
        )
        .await
    );

    // Errors name the location.
    let e = engine
        .sql("SELECT * FROM 's3://lake/nothing/*.parquet'")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "glob matches no files: s3://lake/nothing/*.parquet"
    );
    let e = engine
        .sql("SELECT * FROM 's3://lake/violations/none.parquet'")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("s3://lake/violations/none.parquet"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blob_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = match start_azurite(dir.path()) {
        Ok(s) => s,
        Err(e) => {
            skip(
                "azure_blob_round_trip",
                &format!("the Azure test server (azurite-blob, from npm) is unavailable: {e}"),
            );
            return;
        }
    };
    let port = azurite.port;
    const ACCOUNT: &str = "devstoreaccount1";
    // Azurite's published development key.
    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    assert_eq!(create_container(port, ACCOUNT, KEY, "lake"), 201);

    let engine = catalog_engine()
        .store(
            "az://lake",
            [
                ("account_name", ACCOUNT.to_string()),
                ("access_key", KEY.to_string()),
                ("endpoint", format!("http://127.0.0.1:{port}/{ACCOUNT}")),
                ("allow_http", "true".to_string()),
            ],
        )
        .build()
        .await
        .unwrap();
    rows(&engine, "COPY (SELECT * FROM violations WHERE year = 2024) TO 'az://lake/v/' (FORMAT parquet, PARTITION_BY (month))").await;
    rows(
        &engine,
        "COPY people TO 'az://lake/people.csv' (FORMAT csv, HEADER true)",
    )
    .await;
    let y2024 = int(&engine, "SELECT count(*) FROM violations WHERE year = 2024").await;
    assert_eq!(
        int(&engine, "SELECT count(*) FROM 'az://lake/v/**/*.parquet'").await,
        y2024
    );
    assert_eq!(
        int(
            &engine,
            "SELECT count(*) FROM 'az://lake/v/' WHERE month = 2"
        )
        .await,
        int(
            &engine,
            "SELECT count(*) FROM violations WHERE year = 2024 AND month = 2"
        )
        .await
    );
    assert_eq!(
        int(&engine, "SELECT count(*) FROM read_csv('az://lake/*.csv')").await,
        80
    );
}

/// Create a blob container with a SharedKey-signed request, as Azure's SDKs do.
fn create_container(port: u16, account: &str, key: &str, container: &str) -> u16 {
    use base64::Engine as _;
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{account}/{account}/{container}\nrestype:container"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        to_sign.as_bytes(),
    );
    let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    http(
        port,
        "PUT",
        &format!("/{account}/{container}?restype=container"),
        &[
            ("x-ms-date", date),
            ("x-ms-version", version.to_string()),
            ("Authorization", format!("SharedKey {account}:{sig}")),
        ],
        b"",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_urls_are_tables() {
    let port = serve_files(root().join("data"), Fault::None).await.port;
    let engine = catalog_engine().build().await.unwrap();
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(
        int(
            &engine,
            &format!("SELECT count(*) FROM '{base}/violations/year=2023/month=1/part-0.parquet'")
        )
        .await,
        176
    );
    assert_eq!(
        int(
            &engine,
            &format!("SELECT count(*) FROM read_csv('{base}/people/people-1.csv')")
        )
        .await,
        40
    );
    assert_eq!(
        int(&engine, &format!("SELECT count(*) FROM read_csv('{base}/violations_csv/year=2023/month=1/part-0.csv.gz')")).await,
        176
    );
    assert_eq!(
        int(
            &engine,
            &format!("SELECT count(*) FROM read_json('{base}/events/events-0.ndjson')")
        )
        .await,
        100
    );
    assert_eq!(
        int(
            &engine,
            &format!("SELECT count(*) FROM '{base}/formats/violations_2023_01.arrow'")
        )
        .await,
        176
    );
    assert_eq!(
        int(
            &engine,
            &format!("SELECT count(*) FROM '{base}/formats/violations_2023_01.avro'")
        )
        .await,
        176
    );
    let e = engine
        .sql(&format!("SELECT * FROM '{base}/nope.parquet'"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope.parquet"), "{e}");
}
