//! Queries on a Ballista cluster started inside the test process give the same answers as
//! local execution.

use strata::Engine;
use strata::datafusion::arrow::util::pretty::pretty_format_batches;

async fn answer(engine: &Engine, sql: &str) -> String {
    let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_cluster_answers_like_local_execution() {
    let root = env!("CARGO_MANIFEST_DIR");
    let local = Engine::builder()
        .catalog(format!("{root}/strata.toml"))
        .build()
        .await
        .unwrap();
    let cluster = Engine::builder()
        .catalog(format!("{root}/strata.toml"))
        .cluster("local:2")
        .build()
        .await
        .unwrap();
    assert_eq!(cluster.runner().name(), "cluster");
    for sql in [
        "SELECT year, count(*) AS n FROM violations GROUP BY year ORDER BY year",
        "SELECT registration_state, count(DISTINCT plate_id) AS plates FROM violations GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
    ] {
        assert_eq!(
            answer(&cluster, sql).await,
            answer(&local, sql).await,
            "{sql}"
        );
    }
}
