//! Arithmetic with PostgreSQL's answers where DataFusion's defaults differ: integer `+`, `-`,
//! `*` and negation fail on overflow instead of wrapping around (an analyzer rule), and `sum`
//! of integers is computed exactly in a wider type instead of wrapping (Strata's `sum`);
//! the product of two decimals fails on overflow instead of wrapping, and is computed with
//! one 64-bit multiplication per row where both operands fit in 64 bits.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err, internal_err, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity,
};
use datafusion::logical_expr::{
    BinaryExpr, Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TryCast, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Rewrites integer arithmetic and float division into [`CheckedArithmetic`] calls; runs after DataFusion's type
/// coercion, keeping every output name.
#[derive(Debug, Default)]
pub struct PostgresArithmetic;

impl AnalyzerRule for PostgresArithmetic {
    fn name(&self) -> &str {
        "strata_postgres_arithmetic"
    }

    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        let options = config.extensions.get::<crate::optimizer::StrataOptions>();
        let rewrites = Rewrites {
            literals_at_scale: options.is_none_or(|o| o.decimal_literals_at_scale),
            decimal_products: options.is_none_or(|o| o.decimal_products),
        };
        plan.transform_up_with_subqueries(|p| rewrite_node(p, rewrites))
            .map(|t| t.data)
    }
}

/// The rewrites that settings can turn off.
#[derive(Debug, Clone, Copy)]
struct Rewrites {
    literals_at_scale: bool,
    decimal_products: bool,
}

fn rewrite_node(plan: LogicalPlan, rewrites: Rewrites) -> Result<Transformed<LogicalPlan>> {
    if matches!(plan, LogicalPlan::TableScan(_)) {
        return Ok(Transformed::no(plan));
    }
    let schema = merge_schema(&plan.inputs());
    let names = NamePreserver::new(&plan);
    let rewritten = plan.map_expressions(|expr| {
        let name = names.save(&expr);
        expr.transform_up(|e| rewrite_expr(e, &schema, rewrites))
            .map(|t| t.update_data(|e| name.restore(e)))
    })?;
    if rewritten.transformed {
        rewritten.map_data(|p| p.recompute_schema())
    } else {
        Ok(rewritten)
    }
}

fn rewrite_expr(expr: Expr, schema: &DFSchema, rewrites: Rewrites) -> Result<Transformed<Expr>> {
    let type_of = |e: &Expr| type_of(e, schema);
    if rewrites.literals_at_scale
        && let Some(rewritten) = literal_at_scale(&expr, schema)
    {
        return Ok(Transformed::yes(rewritten));
    }
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Multiply,
            right,
        }) if rewrites.decimal_products
            && product_type(type_of(&left).as_ref(), type_of(&right).as_ref()).is_some() =>
        {
            Ok(Transformed::yes(
                decimal_product().call(vec![*left, *right]),
            ))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply)
                && type_of(&left).is_some_and(|t| t.is_integer())
                && type_of(&left) == type_of(&right) =>
        {
            let udf = checked(Checked::from_operator(op));
            Ok(Transformed::yes(udf.call(vec![*left, *right])))
        }
        // Integer and decimal division by zero already fail; floats would give inf or NaN.
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Divide | Operator::Modulo)
                && type_of(&left).is_some_and(|t| t.is_floating())
                && type_of(&left) == type_of(&right) =>
        {
            let udf = checked(Checked::from_operator(op));
            Ok(Transformed::yes(udf.call(vec![*left, *right])))
        }
        Expr::Negative(inner) if type_of(&inner).is_some_and(|t| t.is_signed_integer()) => Ok(
            Transformed::yes(checked(Checked::Negate).call(vec![*inner])),
        ),
        // A decimal or float cast to an integer rounds, as in DuckDB and PostgreSQL;
        // DataFusion truncates (`CAST(-453.99 AS BIGINT)` gave -453, not -454).
        Expr::Cast(Cast { expr, field }) if rounds_first(&expr, &field, schema) => {
            let rounded = Box::new(rounded(*expr, schema));
            Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
                rounded, field,
            ))))
        }
        Expr::TryCast(TryCast { expr, field }) if rounds_first(&expr, &field, schema) => {
            let rounded = Box::new(rounded(*expr, schema));
            Ok(Transformed::yes(Expr::TryCast(TryCast::new_from_field(
                rounded, field,
            ))))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// `1 - d` with `d` a `DECIMAL(15,2)`: DataFusion types the literal `DECIMAL(20,0)`, and arrow
/// then brings it to scale 2 on every row, with two checked 128-bit multiplications per row.
/// Written at the other side's scale (`1.00`) the literal needs none. A cast to the
/// expression's own type keeps its type; it costs nothing (same scale, no less precision).
fn literal_at_scale(e: &Expr, schema: &DFSchema) -> Option<Expr> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    if !matches!(op, Operator::Plus | Operator::Minus) {
        return None;
    }
    // A side's type is asked for only when the other is a literal: asking for the type of a
    // chain of checked calls names the chain.
    let rescaled = |lit: &Expr, other: &Expr| -> Option<Expr> {
        let (value, scale) = decimal_literal(lit)?;
        let DataType::Decimal128(_, to) = other.get_type(schema).ok()? else {
            return None;
        };
        if to <= scale || !(0..=38).contains(&to) {
            return None;
        }
        let value = value.checked_mul(10i128.checked_pow((to - scale) as u32)?)?;
        let digits = value
            .unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d as u8 + 1);
        let precision = digits.max(to as u8);
        (precision <= 38)
            .then(|| Expr::Literal(ScalarValue::Decimal128(Some(value), precision, to), None))
    };
    let (left, right) = match rescaled(left, right) {
        Some(l) => (l, (**right).clone()),
        None => {
            let r = rescaled(right, left)?;
            ((**left).clone(), r)
        }
    };
    let DataType::Decimal128(p, s) = e.get_type(schema).ok()? else {
        return None;
    };
    let rewritten = Expr::BinaryExpr(BinaryExpr::new(Box::new(left), *op, Box::new(right)));
    match rewritten.get_type(schema).ok()? {
        DataType::Decimal128(p2, s2) if s2 == s && p2 <= p => Some(Expr::Cast(Cast::new(
            Box::new(rewritten),
            DataType::Decimal128(p, s),
        ))),
        _ => None,
    }
}

/// A decimal or integer literal (as type coercion leaves it: cast to a decimal of scale 0),
/// as its unscaled value and scale.
fn decimal_literal(e: &Expr) -> Option<(i128, i8)> {
    match e {
        Expr::Literal(ScalarValue::Decimal128(Some(v), _, s), _) => Some((*v, *s)),
        Expr::Cast(Cast { expr, field })
            if matches!(field.data_type(), DataType::Decimal128(..)) =>
        {
            match expr.as_ref() {
                Expr::Literal(v, _) if v.data_type().is_integer() && !v.is_null() => {
                    let ScalarValue::Decimal128(Some(v), _, s) =
                        v.cast_to(&DataType::Decimal128(38, 0)).ok()?
                    else {
                        return None;
                    };
                    Some((v, s))
                }
                _ => decimal_literal(expr),
            }
        }
        _ => None,
    }
}

/// The type of `e`. A checked call has its first argument's type, found by following first
/// arguments down a chain (`a + b + c + ...`): DataFusion's type of a function call names the
/// call, and so the whole chain below it, which made a chain's rewrite cubic in its length.
fn type_of(e: &Expr, schema: &DFSchema) -> Option<DataType> {
    let mut e = e;
    loop {
        match e {
            Expr::ScalarFunction(f) if f.func.inner().is::<CheckedArithmetic>() => {
                e = f.args.first()?;
            }
            _ => return e.get_type(schema).ok(),
        }
    }
}

/// Whether a cast of `expr` to `field` must round `expr` first: a decimal with a fraction or a
/// float cast to an integer, not rounded already (a plan analyzed twice rounds once).
fn rounds_first(expr: &Expr, field: &Field, schema: &DFSchema) -> bool {
    field.data_type().is_integer()
        && !is_rounded(expr)
        && expr.get_type(schema).is_ok_and(|t| rounds_to_integer(&t))
}

/// Whether a value of type `t` is rounded, not truncated, when cast to an integer.
fn rounds_to_integer(t: &DataType) -> bool {
    t.is_floating()
        || matches!(
            t,
            DataType::Decimal32(_, s) | DataType::Decimal64(_, s) | DataType::Decimal128(_, s)
                | DataType::Decimal256(_, s) if *s > 0
        )
}

/// `e` rounded to a whole number as DuckDB and PostgreSQL do before a cast to an integer:
/// decimals half away from zero, floats half to even (`CAST(2.5::DOUBLE AS INT)` is 2).
fn rounded(e: Expr, schema: &DFSchema) -> Expr {
    use datafusion::functions::math::{abs, round, trunc};
    let float = e.get_type(schema).is_ok_and(|t| t.is_floating());
    if !float {
        return round().call(vec![e]);
    }
    let half = abs()
        .call(vec![e.clone() - trunc().call(vec![e.clone()])])
        .eq(datafusion::prelude::lit(0.5));
    let even = round().call(vec![e.clone() / datafusion::prelude::lit(2.0)])
        * datafusion::prelude::lit(2.0);
    Expr::Case(datafusion::logical_expr::Case::new(
        None,
        vec![(Box::new(half), Box::new(even))],
        Some(Box::new(round().call(vec![e]))),
    ))
}

/// Whether `e` is already rounded (a plan analyzed twice rounds once).
fn is_rounded(e: &Expr) -> bool {
    match e {
        Expr::ScalarFunction(f) => f.name() == "round",
        Expr::Case(c) => c.else_expr.as_deref().is_some_and(is_rounded),
        _ => false,
    }
}

/// The arithmetic [`CheckedArithmetic`] performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checked {
    /// `a + b`
    Add,
    /// `a - b`
    Subtract,
    /// `a * b`
    Multiply,
    /// `-a`
    Negate,
    /// `a / b` of floats, failing when `b` is zero.
    Divide,
    /// `a % b` of floats, failing when `b` is zero.
    Modulo,
}

impl Checked {
    fn from_operator(op: Operator) -> Checked {
        match op {
            Operator::Minus => Checked::Subtract,
            Operator::Multiply => Checked::Multiply,
            Operator::Divide => Checked::Divide,
            Operator::Modulo => Checked::Modulo,
            _ => Checked::Add,
        }
    }

    fn operator(self) -> Option<Operator> {
        match self {
            Checked::Add => Some(Operator::Plus),
            Checked::Subtract => Some(Operator::Minus),
            Checked::Multiply => Some(Operator::Multiply),
            Checked::Divide => Some(Operator::Divide),
            Checked::Modulo => Some(Operator::Modulo),
            Checked::Negate => None,
        }
    }
}

/// The scalar function for one kind of checked arithmetic.
pub fn checked(kind: Checked) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(CheckedArithmetic::new(kind)))
}

/// Every function this module's rewrites call, for sessions that decode plans.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    [
        Checked::Add,
        Checked::Subtract,
        Checked::Multiply,
        Checked::Negate,
        Checked::Divide,
        Checked::Modulo,
    ]
    .into_iter()
    .map(checked)
    .chain([decimal_product()])
    .collect()
}

/// Integer arithmetic that fails ("BIGINT out of range") instead of wrapping around, and float
/// division that fails on a zero divisor instead of giving infinity or NaN.
/// Its output column is named as the operator it replaces (`a + b`), so rewriting a query
/// does not rename its columns.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedArithmetic {
    kind: Checked,
    name: &'static str,
    signature: Signature,
}

impl CheckedArithmetic {
    fn new(kind: Checked) -> Self {
        let (name, arity) = match kind {
            Checked::Add => ("checked_add", 2),
            Checked::Subtract => ("checked_subtract", 2),
            Checked::Multiply => ("checked_multiply", 2),
            Checked::Negate => ("checked_negate", 1),
            Checked::Divide => ("checked_divide", 2),
            Checked::Modulo => ("checked_modulo", 2),
        };
        CheckedArithmetic {
            kind,
            name,
            signature: Signature::any(arity, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CheckedArithmetic {
    fn name(&self) -> &str {
        self.name
    }

    /// The name of the expression this call stands for, written without copying it (each
    /// level of a chain `a + b + c + ...` would copy all below it).
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match (self.kind.operator(), args) {
            (Some(op), [l, r]) => Ok(format!("{} {op} {}", l.schema_name(), r.schema_name())),
            (None, [a]) => Ok(format!("(- {})", a.schema_name())),
            _ => internal_err!("{} takes {} arguments", self.name, args.len()),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(t) => Ok(t.clone()),
            None => internal_err!("{} takes arguments", self.name),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let Some(first) = args.arg_fields.first() else {
            return internal_err!("{} takes arguments", self.name);
        };
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name,
            first.data_type().clone(),
            nullable,
        )))
    }

    /// Unbounded, of the arguments' type (the default's type is NULL, on which functions
    /// above it that reason about ranges, such as `abs`, fail: a window ordered by
    /// `abs(a - b)` was then refused as unsorted).
    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        match input.first() {
            Some(first) => Interval::make_unbounded(&first.data_type()),
            None => internal_err!("{} takes arguments", self.name),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let result = match (self.kind, args.args.as_slice()) {
            (Checked::Negate, [a]) => {
                let a = a.to_array(args.number_rows)?;
                numeric::neg(a.as_ref())
            }
            (kind, [l, r]) => {
                if matches!(kind, Checked::Divide | Checked::Modulo) && has_zero(r)? {
                    return exec_err!("division by zero");
                }
                let l = datum(l)?;
                let r = datum(r)?;
                let f = match kind {
                    Checked::Add => numeric::add,
                    Checked::Subtract => numeric::sub,
                    Checked::Divide => numeric::div,
                    Checked::Modulo => numeric::rem,
                    _ => numeric::mul,
                };
                f(l.as_ref(), r.as_ref())
            }
            _ => return internal_err!("{}: wrong number of arguments", self.name),
        };
        let array = match result {
            Ok(a) => a,
            Err(e) => return out_of_range(&args.return_field, &e.to_string()),
        };
        if all_scalar && array.len() == 1 {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(array))
        }
    }
}

/// The type of `a * b` for decimals `a` and `b` as DataFusion types it, where that is the
/// exact product (its scale is the sum of theirs); `None` for other operands.
fn product_type(left: Option<&DataType>, right: Option<&DataType>) -> Option<DataType> {
    let (Some(l @ DataType::Decimal128(_, ls)), Some(r @ DataType::Decimal128(_, rs))) =
        (left, right)
    else {
        return None;
    };
    match BinaryTypeCoercer::new(l, &Operator::Multiply, r).get_result_type() {
        Ok(t @ DataType::Decimal128(_, s)) if i16::from(s) == i16::from(*ls) + i16::from(*rs) => {
            Some(t)
        }
        _ => None,
    }
}

/// The function `a * b` of two decimals becomes: see [`DecimalProduct`].
pub fn decimal_product() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(DecimalProduct::default()))
}

/// The product of two `DECIMAL`s, of the type DataFusion gives `a * b`. Where every operand
/// fits in 64 bits (`DECIMAL(15,2)` prices and discounts do), each row takes one 64-bit
/// multiplication into a 128-bit result, which cannot overflow; otherwise arrow's checked
/// 128-bit product. Either way an overflow is an error (DataFusion's `*` wrapped around into
/// a wrong number), as is a product with more digits than its type's precision.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DecimalProduct {
    signature: Signature,
}

impl Default for DecimalProduct {
    fn default() -> Self {
        DecimalProduct {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DecimalProduct {
    fn name(&self) -> &str {
        "decimal_multiply"
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [l, r] => Ok(format!("{} * {}", l.schema_name(), r.schema_name())),
            _ => internal_err!("decimal_multiply takes 2 arguments"),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [l, r] => match product_type(Some(l), Some(r)) {
                Some(t) => Ok(t),
                None => plan_err!("decimal_multiply takes two decimals, not {l} and {r}"),
            },
            _ => internal_err!("decimal_multiply takes 2 arguments"),
        }
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        let types: Vec<DataType> = input.iter().map(|i| i.data_type()).collect();
        Interval::make_unbounded(&self.return_type(&types)?)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Decimal128(precision, scale) = *args.return_field.data_type() else {
            return internal_err!("decimal_multiply returns a decimal");
        };
        let [l, r] = args.args.as_slice() else {
            return internal_err!("decimal_multiply takes 2 arguments");
        };
        let null_factor = |v: &ColumnarValue| matches!(v, ColumnarValue::Scalar(s) if s.is_null());
        if null_factor(l) || null_factor(r) {
            let null = ScalarValue::Decimal128(None, precision, scale);
            return Ok(ColumnarValue::Scalar(null));
        }
        // A scalar as a one-value array.
        let as_decimals = |v: &ColumnarValue| -> Result<Decimal128Array> {
            Ok(v.to_array(1)?.as_primitive::<Decimal128Type>().clone())
        };
        let (la, ra) = (as_decimals(l)?, as_decimals(r)?);
        // Two 64-bit operands make a product of at most 38 digits that cannot overflow.
        let fits = all_fit_in_64_bits(&la) && all_fit_in_64_bits(&ra);
        let product = if fits {
            let wide = |x: i128| i128::from(x as i64);
            match (l, r) {
                (ColumnarValue::Scalar(_), ColumnarValue::Array(_)) => {
                    let k = wide(la.value(0));
                    ra.unary(|x| wide(x) * k)
                }
                (ColumnarValue::Array(_), ColumnarValue::Scalar(_)) => {
                    let k = wide(ra.value(0));
                    la.unary(|x| wide(x) * k)
                }
                _ => datafusion::arrow::compute::binary(&la, &ra, |x, y| wide(x) * wide(y))?,
            }
        } else {
            match numeric::mul(datum(l)?.as_ref(), datum(r)?.as_ref()) {
                Ok(p) => p.as_primitive::<Decimal128Type>().clone(),
                Err(e) => return out_of_range(&args.return_field, &e.to_string()),
            }
        };
        let product = product.with_precision_and_scale(precision, scale)?;
        if precision >= 38 && !fits {
            product.validate_decimal_precision(precision).or_else(|_| {
                exec_err!("DECIMAL out of range: a product has more than {precision} digits")
            })?;
        }
        if matches!((l, r), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))) {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &product, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(Arc::new(product)))
        }
    }
}

/// Whether every value (NULL slots included) fits in an `i64`; no branch per value.
fn all_fit_in_64_bits(a: &Decimal128Array) -> bool {
    a.values()
        .iter()
        .fold(true, |fits, &v| fits & (i128::from(v as i64) == v))
}

/// Whether a float divisor holds a zero (NULLs aside).
fn has_zero(v: &ColumnarValue) -> Result<bool> {
    use datafusion::arrow::compute::kernels::cmp::eq;
    let zero = ScalarValue::new_zero(&v.data_type())?.to_scalar()?;
    let divisor = datum(v)?;
    let equal = eq(divisor.as_ref(), &zero)?;
    Ok(equal.true_count() > 0)
}

fn datum(v: &ColumnarValue) -> Result<Box<dyn datafusion::arrow::array::Datum>> {
    Ok(match v {
        ColumnarValue::Array(a) => Box::new(a.clone() as ArrayRef),
        ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
    })
}

fn out_of_range(field: &Field, arrow_message: &str) -> Result<ColumnarValue> {
    let detail = arrow_message
        .rsplit_once("Overflow happened on: ")
        .map(|(_, d)| d.trim())
        .unwrap_or(arrow_message);
    // Arrow writes a negation as `- -9223372036854775808`.
    let detail = match detail.strip_prefix("- ") {
        Some(operand) => format!("-({operand})"),
        None => detail.to_string(),
    };
    let type_name = match field.data_type() {
        DataType::Int8 => "TINYINT",
        DataType::Int16 => "SMALLINT",
        DataType::Int32 => "INTEGER",
        DataType::Int64 => "BIGINT",
        DataType::UInt8 => "TINYINT UNSIGNED",
        DataType::UInt16 => "SMALLINT UNSIGNED",
        DataType::UInt32 => "INTEGER UNSIGNED",
        DataType::Decimal128(..) => "DECIMAL",
        _ => "BIGINT UNSIGNED",
    };
    exec_err!("{type_name} out of range: {detail}")
}

/// The type `sum` of integers is computed and returned in (DuckDB: `HUGEINT`, PostgreSQL:
/// `numeric` for BIGINT): exact where a BIGINT sum would wrap around.
pub const WIDE_SUM: DataType = DataType::Decimal128(38, 0);

/// `sum` as DuckDB types it: integers of every width sum to [`WIDE_SUM`], other types as in
/// DataFusion's `sum` (which does the summing).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WideSum {
    inner: Sum,
    signature: Signature,
}

impl Default for WideSum {
    fn default() -> Self {
        WideSum {
            inner: Sum::new(),
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Strata's `sum`, which replaces DataFusion's in every session.
pub fn wide_sum() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::new_from_impl(WideSum::default()))
}

fn sum_input(t: &DataType) -> Result<DataType> {
    Ok(match t {
        // Every integer type, so that coercing twice gives what coercing once gives.
        t if t.is_integer() => WIDE_SUM,
        DataType::Null => DataType::Int64,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => DataType::Float64,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..)
        | DataType::Duration(_)
        | DataType::Interval(_) => t.clone(),
        DataType::Dictionary(_, values) => sum_input(values)?,
        other => {
            return plan_err!("sum() of {other} values is not supported; cast them to a number");
        }
    })
}

impl AggregateUDFImpl for WideSum {
    fn name(&self) -> &str {
        "sum"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [one] => Ok(vec![sum_input(one)?]),
            _ => plan_err!("sum() takes one argument, not {}", arg_types.len()),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.accumulator(args)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        self.inner.create_groups_accumulator(args)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.create_sliding_accumulator(args)
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner.reverse_expr()
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }
}
