//! A function that panics, standing in for a bug in an operator or a reader.

use std::sync::Arc;

use strata::Engine;
use strata::datafusion::arrow::datatypes::DataType;
use strata::datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

/// Register `boom(BIGINT)`, which panics with "boom went off" when called.
pub fn register_panicking_function(engine: &Engine) {
    let boom = create_udf(
        "boom",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|_args: &[ColumnarValue]| panic!("boom went off")),
    );
    engine.session().register_udf(boom);
}
