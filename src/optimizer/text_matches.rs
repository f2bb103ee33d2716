//! A filter's comparisons of a text column with literals (`=`, `<>`, `IN`, `NOT IN`, and an
//! `OR` of equalities on one column) answered once per distinct string of each batch.
//!
//! Text read from a Parquet dictionary arrives as string views that repeat: every row holding
//! one dictionary entry carries the same 16-byte view (length, prefix, buffer and offset).
//! arrow compares each row's view with the literal (length, then prefix, then the bytes),
//! with a branch that follows the data; TPC-H q19's two such conditions on `lineitem` took
//! more time than decoding its six columns. Here each row's view is looked up in a small
//! table of the views seen in the batch and their answer; a row whose view is new is
//! compared once. A batch whose views keep missing the table (many distinct strings) is
//! compared row by row from then on.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringViewArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{
    ColumnarValue, Operator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, InListExpr, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

use super::setting_on;

const NAME: &str = "strata_text_in";

/// Views a batch may miss the table with before the rest of it is compared row by row.
const MISSES_BEFORE_ROW_BY_ROW: usize = 256;

/// Slots of the table of views seen (a power of two), and how many a view may look at.
const SLOTS: usize = 64;
const PROBES: usize = 8;

/// Rewrites the comparisons of filters (see the module's description).
#[derive(Debug, Default)]
pub struct TextMatches;

impl PhysicalOptimizerRule for TextMatches {
    fn name(&self) -> &str {
        "TextMatches"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !setting_on(config, |o| o.text_matches) {
            return Ok(plan);
        }
        let options = Arc::new(config.clone());
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let schema = filter.input().schema();
            let predicate =
                Arc::clone(filter.predicate()).transform_up(|e| rewrite(e, &schema, &options))?;
            if !predicate.transformed {
                return Ok(Transformed::no(node));
            }
            let rebuilt = FilterExecBuilder::from(filter)
                .with_predicate(predicate.data)
                .build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A comparison of a text column with literals, as the rule reads it.
struct Match {
    column: Arc<dyn PhysicalExpr>,
    negated: bool,
    values: Vec<String>,
}

fn rewrite(
    e: Arc<dyn PhysicalExpr>,
    schema: &Schema,
    options: &Arc<ConfigOptions>,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    let found = if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        match b.op() {
            Operator::Eq | Operator::NotEq => {
                let negated = *b.op() == Operator::NotEq;
                let pair = match (text_column(b.left(), schema), literal(b.right())) {
                    (Some(c), Some(v)) => Some((c, v)),
                    _ => text_column(b.right(), schema).zip(literal(b.left())),
                };
                pair.map(|(column, value)| Match {
                    column,
                    negated,
                    values: vec![value],
                })
            }
            // `c = 'a' OR c = 'b'` (the simplifier writes short `IN` lists so): one lookup.
            Operator::Or => match (matched(b.left()), matched(b.right())) {
                (Some(l), Some(r)) if !l.negated && !r.negated && l.column.eq(&r.column) => {
                    let mut values = l.values;
                    values.extend(r.values);
                    Some(Match {
                        column: l.column,
                        negated: false,
                        values,
                    })
                }
                _ => None,
            },
            _ => None,
        }
    } else if let Some(list) = e.downcast_ref::<InListExpr>() {
        text_column(list.expr(), schema).and_then(|column| {
            let values = list
                .list()
                .iter()
                .map(literal)
                .collect::<Option<Vec<_>>>()?;
            Some(Match {
                column,
                negated: list.negated(),
                values,
            })
        })
    } else {
        None
    };
    let Some(m) = found else {
        return Ok(Transformed::no(e));
    };
    let mut args = vec![
        m.column,
        Arc::new(Literal::new(ScalarValue::Boolean(Some(m.negated)))) as Arc<dyn PhysicalExpr>,
    ];
    args.extend(
        m.values
            .into_iter()
            .map(|v| Arc::new(Literal::new(ScalarValue::Utf8(Some(v)))) as Arc<dyn PhysicalExpr>),
    );
    let call = ScalarFunctionExpr::try_new(text_in(), args, schema, Arc::clone(options))?;
    Ok(Transformed::yes(Arc::new(call)))
}

/// A `strata_text_in` call this rule wrote, read back.
fn matched(e: &Arc<dyn PhysicalExpr>) -> Option<Match> {
    let f = e.downcast_ref::<ScalarFunctionExpr>()?;
    if f.name() != NAME {
        return None;
    }
    let [column, negated, values @ ..] = f.args() else {
        return None;
    };
    let negated = match negated.downcast_ref::<Literal>()?.value() {
        ScalarValue::Boolean(Some(n)) => *n,
        _ => return None,
    };
    Some(Match {
        column: Arc::clone(column),
        negated,
        values: values.iter().map(literal).collect::<Option<Vec<_>>>()?,
    })
}

/// A column of string views, seen through `strata_same` (which keeps `IN` lists apart).
fn text_column(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Arc<dyn PhysicalExpr>> {
    if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>()
        && f.name() == "strata_same"
        && let [inner] = f.args()
    {
        return text_column(inner, schema);
    }
    let column = e.downcast_ref::<Column>()?;
    (schema.field(column.index()).data_type() == &DataType::Utf8View).then(|| Arc::clone(e))
}

/// A string literal that is not NULL.
fn literal(e: &Arc<dyn PhysicalExpr>) -> Option<String> {
    match e.downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
        _ => None,
    }
}

/// `strata_text_in(x, negated, v1, v2, ...)`: whether the text `x` is one of the values (or,
/// `negated`, none of them); NULL where `x` is NULL.
pub fn text_in() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TextIn {
        signature: Signature::variadic_any(Volatility::Immutable),
    }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TextIn {
    signature: Signature,
}

impl ScalarUDFImpl for TextIn {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.first().is_none_or(|f| f.is_nullable());
        Ok(Arc::new(Field::new(NAME, DataType::Boolean, nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [x, negated, values @ ..] = args.args.as_slice() else {
            return internal_err!("{NAME} takes a text, a flag and values");
        };
        let negated = match negated {
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(n))) => *n,
            _ => return internal_err!("{NAME}: the second argument is a flag"),
        };
        let values = values
            .iter()
            .map(|v| match v {
                ColumnarValue::Scalar(
                    ScalarValue::Utf8(Some(s))
                    | ScalarValue::Utf8View(Some(s))
                    | ScalarValue::LargeUtf8(Some(s)),
                ) => Ok(s.as_str()),
                _ => internal_err!("{NAME}: the values are text literals"),
            })
            .collect::<Result<Vec<_>>>()?;
        match x {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(matches(a, &values, negated)?)),
            ColumnarValue::Scalar(s) => {
                let text = match s {
                    ScalarValue::Utf8(t) | ScalarValue::Utf8View(t) | ScalarValue::LargeUtf8(t) => {
                        t.as_deref()
                    }
                    ScalarValue::Null => None,
                    other => return exec_err!("{NAME} of {}", other.data_type()),
                };
                let answer = text.map(|t| values.contains(&t) != negated);
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(answer)))
            }
        }
    }
}

/// Each row of `array`: whether it is one of `values` (`negated`: none of them).
fn matches(array: &ArrayRef, values: &[&str], negated: bool) -> Result<ArrayRef> {
    let Some(views) = array.as_string_view_opt() else {
        return exec_err!("{NAME} of {}", array.data_type());
    };
    let answer = |i: usize| {
        // SAFETY: `i` is below the array's length (`collect_bool` counts to it), and
        // `by_distinct_views` asks only of rows that are not NULL, whose views point at text.
        let text = unsafe { views.value_unchecked(i) };
        values.contains(&text) != negated
    };
    let bits = by_distinct_views(views, answer);

    Ok(Arc::new(BooleanArray::new(bits, views.nulls().cloned())))
}

/// `answer` for each row that is not NULL, asked once per distinct view of the batch while
/// few views are new; row by row once `MISSES_BEFORE_ROW_BY_ROW` have been.
fn by_distinct_views(array: &StringViewArray, answer: impl Fn(usize) -> bool) -> BooleanBuffer {
    let views = array.views();
    // An open-addressed table: each slot a view and its answer, or empty.
    let mut keys = [0u128; SLOTS];
    let mut known = [None::<bool>; SLOTS];
    let mut misses = 0usize;
    BooleanBuffer::collect_bool(array.len(), |i| {
        // A NULL row's answer is masked by its null; its view need not point at text.
        if misses >= MISSES_BEFORE_ROW_BY_ROW {
            return array.is_valid(i) && answer(i);
        }
        let view = views[i];
        let mixed = (view as u64) ^ ((view >> 64) as u64).rotate_left(29);
        let mut slot =
            (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize;
        for _ in 0..PROBES {
            match known[slot] {
                // A NULL row's answer is masked by its null, whatever it is.
                Some(a) if keys[slot] == view => return a,
                Some(_) => slot = (slot + 1) % SLOTS,
                None => break,
            }
        }
        // A NULL row's view says nothing of a string (an empty one's view is zero too): it
        // is not remembered.
        if array.is_null(i) {
            return false;
        }
        misses += 1;
        let a = answer(i);
        if known[slot].is_none() {
            keys[slot] = view;
            known[slot] = Some(a);
        }
        a
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::compute::kernels::cmp;
    use datafusion::arrow::compute::{cast, or_kleene};

    /// arrow's own answer to `x IN values` (or `NOT IN`), as an `OR` of equalities.
    fn arrow_answer(x: &ArrayRef, values: &[&str], negated: bool) -> BooleanArray {
        let mut any: Option<BooleanArray> = None;
        for v in values {
            let scalar = StringViewArray::new_scalar(*v);
            let eq = cmp::eq(x, &scalar).unwrap();
            any = Some(match any {
                None => eq,
                Some(a) => or_kleene(&a, &eq).unwrap(),
            });
        }
        let any = any.unwrap();
        if negated {
            datafusion::arrow::compute::not(&any).unwrap()
        } else {
            any
        }
    }

    #[test]
    fn answers_as_arrow_compares_for_few_and_many_distinct_strings() {
        let next = crate::testing::numbers(0x2545_f491_4f6c_dd1d_u64);
        let few = [
            "AIR",
            "AIR REG",
            "DELIVER IN PERSON",
            "TAKE BACK RETURN",
            "",
            "MAIL",
        ];
        for distinct in [3u64, 6, 5_000] {
            let rows: Vec<Option<String>> = (0..20_000)
                .map(|_| {
                    (next(10) > 0).then(|| {
                        let k = next(distinct);
                        match few.get(k as usize) {
                            Some(s) if distinct <= few.len() as u64 => s.to_string(),
                            _ => format!("a value longer than twelve bytes {k}"),
                        }
                    })
                })
                .collect();
            let plain: ArrayRef = Arc::new(StringArray::from(rows));
            let x = cast(&plain, &DataType::Utf8View).unwrap();
            for values in [
                vec!["AIR"],
                vec!["AIR", "AIR REG"],
                vec!["DELIVER IN PERSON"],
                vec![""],
                vec!["a value longer than twelve bytes 17", "MAIL"],
            ] {
                for negated in [false, true] {
                    let ours = matches(&x, &values, negated).unwrap();
                    let ours: Vec<Option<bool>> = ours.as_boolean().iter().collect();
                    let arrow: Vec<Option<bool>> =
                        arrow_answer(&x, &values, negated).iter().collect();
                    let first = ours.iter().zip(&arrow).position(|(a, b)| a != b);
                    assert_eq!(
                        first.map(|i| (i, ours[i], arrow[i], plain.is_null(i))),
                        None,
                        "{distinct} distinct, {values:?}, negated {negated}"
                    );
                }
            }
        }
    }
}
