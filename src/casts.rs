//! Casts inside function arguments, named apart. DataFusion names `CAST(x AS BIGINT)` as plain
//! `x`, so `SELECT sum(d), sum(CAST(d AS BIGINT)) FROM t` made two aggregates both named
//! `sum(t.d)`, and planning failed ("duplicate unqualified field name"). When it does, the
//! statement is planned again with each such cast wrapped in [`named_cast`], whose name shows
//! the cast.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, ObjectNamePart, Value,
    VisitMut, VisitorMut,
};

/// The function [`named_cast`] is registered as.
const NAME: &str = "strata_named_cast";

/// Wrap every cast inside a function's arguments in `strata_named_cast(cast, 'TYPE')`.
/// Returns whether any was wrapped.
pub fn name_casts_in_arguments(stmt: &mut DfStatement) -> bool {
    struct Casts {
        /// How deep inside function arguments the visit is.
        depth: usize,
        wrapped: bool,
    }
    impl VisitorMut for Casts {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut ast::Expr) -> ControlFlow<()> {
            if let ast::Expr::Function(f) = e
                && f.name.to_string() != NAME
            {
                self.depth += 1;
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, e: &mut ast::Expr) -> ControlFlow<()> {
            match e {
                ast::Expr::Function(f) if f.name.to_string() != NAME => self.depth -= 1,
                ast::Expr::Cast { data_type, .. } if self.depth > 0 => {
                    let text = data_type.to_string();
                    let cast = std::mem::replace(e, ast::Expr::value(Value::Null));
                    *e = ast::Expr::Function(ast::Function {
                        name: ObjectName(vec![ObjectNamePart::Identifier(ast::Ident::new(NAME))]),
                        uses_odbc_syntax: false,
                        parameters: FunctionArguments::None,
                        args: FunctionArguments::List(ast::FunctionArgumentList {
                            duplicate_treatment: None,
                            args: vec![
                                FunctionArg::Unnamed(FunctionArgExpr::Expr(cast)),
                                FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::value(
                                    Value::SingleQuotedString(text),
                                ))),
                            ],
                            clauses: vec![],
                        }),
                        filter: None,
                        null_treatment: None,
                        over: None,
                        within_group: vec![],
                    });
                    self.wrapped = true;
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let DfStatement::Statement(s) = stmt else {
        return false;
    };
    let mut casts = Casts {
        depth: 0,
        wrapped: false,
    };
    let _ = s.visit(&mut casts);
    casts.wrapped
}

/// `strata_named_cast(CAST(x AS T), 'T')`: the cast's value, named `CAST(x AS T)`.
pub fn named_cast() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(NamedCast {
        signature: Signature::any(2, Volatility::Immutable),
    }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NamedCast {
    signature: Signature,
}

impl ScalarUDFImpl for NamedCast {
    fn name(&self) -> &str {
        NAME
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [value, Expr::Literal(ScalarValue::Utf8(Some(t)), _)] => {
                Ok(format!("CAST({} AS {t})", value.schema_name()))
            }
            _ => internal_err!("{NAME} takes a value and its type's name"),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [value, _] => Ok(value.clone()),
            _ => internal_err!("{NAME} takes a value and its type's name"),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        match args.arg_fields {
            [value, _] => Ok(value.clone()),
            _ => internal_err!("{NAME} takes a value and its type's name"),
        }
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        match input {
            [value, _] => Ok((*value).clone()),
            _ => internal_err!("{NAME} takes a value and its type's name"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.into_iter().next() {
            Some(v) => Ok(v),
            None => internal_err!("{NAME} takes a value and its type's name"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_in_arguments_are_wrapped() {
        let mut stmts = crate::sql::parse_statements(
            "SELECT sum(d), sum(CAST(d AS BIGINT)), CAST(d AS INT) FROM t",
            "generic",
        )
        .unwrap();
        assert!(name_casts_in_arguments(&mut stmts[0]));
        assert_eq!(
            stmts[0].to_string(),
            "SELECT sum(d), sum(strata_named_cast(CAST(d AS BIGINT), 'BIGINT')), CAST(d AS INT) FROM t"
        );
        let mut stmts =
            crate::sql::parse_statements("SELECT CAST(d AS INT) FROM t", "generic").unwrap();
        assert!(!name_casts_in_arguments(&mut stmts[0]));
    }
}
