//! A query page as one self-contained HTML file (its figures, SQL, error and plan drawing,
//! styles inlined, no script), to keep or send like a performance report.

use std::fmt::Write;

use datafusion::arrow::array::temporal_conversions::timestamp_ms_to_datetime;

use crate::monitor::{PlanNode, QueryInfo};
use crate::output::{bytes, thousands};
use crate::plan_graph::escape;

/// The report of `query`, with `plan` drawn when there is one, and `style` inlined.
pub(super) fn report(query: &QueryInfo, plan: Option<&PlanNode>, style: &str) -> String {
    let ms = |v: f64| {
        if v >= 1000.0 {
            format!("{:.2} s", v / 1000.0)
        } else {
            format!("{v:.1} ms")
        }
    };
    let utc = |millis: i64| {
        timestamp_ms_to_datetime(millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    };
    let started = utc(query.started_ms);
    let figures = [
        (
            "Session",
            match &query.user {
                Some(user) => format!("{user} ({})", query.session),
                None => query.session.clone(),
            },
        ),
        ("Started", started),
        ("Planning", ms(query.planning_ms)),
        (
            "Execution",
            query.execution_ms.map(ms).unwrap_or("–".into()),
        ),
        ("Elapsed", ms(query.elapsed_ms)),
        ("Rows returned", thousands(query.rows)),
        ("Files", thousands(query.files)),
        ("File bytes", bytes(query.file_bytes)),
        ("Bytes read", bytes(query.bytes_read)),
        ("Rows read", thousands(query.rows_read)),
        (
            "Peak memory",
            query.peak_memory.map(bytes).unwrap_or("–".into()),
        ),
        ("Spilled", bytes(query.spilled_bytes)),
        (
            "Where",
            if query.cluster {
                "cluster"
            } else {
                "one process"
            }
            .into(),
        ),
    ];
    let mut out = String::new();
    let state = query.state.name();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Strata · query {id}</title>\n<style>\n{style}</style>\n</head>\n\
         <body data-page=\"report\">\n<header><span class=\"brand\">Strata</span>\
         <span class=\"status\">report written {now}</span></header>\n<main>\n\
         <h1>Query {id} <span class=\"state {state}\">{state}</span></h1>\n\
         <pre class=\"sql\">{sql}</pre>\n<dl class=\"figures\">\n",
        id = query.id,
        now = utc(super::now_ms() as i64),
        sql = escape(&query.sql),
    );
    for (name, value) in figures {
        let _ = writeln!(out, "<dt>{name}</dt><dd>{}</dd>", escape(&value));
    }
    out.push_str("</dl>\n");
    if let Some(error) = &query.error {
        let _ = writeln!(out, "<p class=\"error\">{}</p>", escape(error));
    }
    match plan {
        Some(plan) => {
            let _ = write!(
                out,
                "<h2>Plan</h2>\n<p class=\"hint\">Each box is an operator, shaded by its share \
                 of CPU time; data flows up.</p>\n<div class=\"plan\">{}</div>\n",
                crate::plan_graph::svg(plan)
            );
        }
        None => out.push_str("<p class=\"hint\">No plan: the query was not planned.</p>\n"),
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}
