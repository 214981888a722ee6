//! Values as PostgreSQL parameters: [`ToSql`] for [`Value`], and the checks that let a
//! row of the wrong types fail alone, before any round trip.

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::table::{ColumnType, Table, Value};

/// Whether each value can be sent as the statement's parameter of the same position.
pub(super) fn check_types(row: &[Value], types: &[Type], table: &Table) -> Result<(), String> {
    for ((value, ty), column) in row.iter().zip(types).zip(table.columns()) {
        if let Err(why) = fits(value, ty) {
            return Err(format!("column `{}`: {why}", column.name));
        }
    }
    Ok(())
}

fn fits(value: &Value, ty: &Type) -> Result<(), String> {
    let ok = match value {
        Value::Null => true,
        Value::Integer(i) => {
            if *ty == Type::INT4 {
                i32::try_from(*i).is_ok()
            } else if *ty == Type::INT2 {
                i16::try_from(*i).is_ok()
            } else {
                [Type::INT8, Type::FLOAT8, Type::FLOAT4].contains(ty)
            }
        }
        Value::Real(_) => *ty == Type::FLOAT8 || *ty == Type::FLOAT4,
        Value::Text(_) => <&str as ToSql>::accepts(ty),
        Value::Blob(_) => *ty == Type::BYTEA,
        Value::Bool(_) => *ty == Type::BOOL,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{value} does not fit a {ty} column"))
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => {
                if *ty == Type::INT4 {
                    i32::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    // Exact up to 2^53, as every float column is.
                    #[allow(clippy::cast_precision_loss)]
                    (*i as f64).to_sql(ty, out)
                } else if *ty == Type::FLOAT4 {
                    #[allow(clippy::cast_precision_loss)]
                    (*i as f32).to_sql(ty, out)
                } else {
                    i.to_sql(ty, out)
                }
            }
            Value::Real(r) => {
                if *ty == Type::FLOAT4 {
                    #[allow(clippy::cast_possible_truncation)]
                    (*r as f32).to_sql(ty, out)
                } else {
                    r.to_sql(ty, out)
                }
            }
            Value::Text(t) => t.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
            Value::Bool(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // Checked per value in `fits` (with a message naming the column), and again by
        // the inner `to_sql`.
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Whether `value` can go into the batch array of a column declared `ty`.
pub(super) fn fits_declared(value: &Value, ty: ColumnType) -> bool {
    matches!(
        (value, ty),
        (Value::Null, _)
            | (Value::Integer(_), ColumnType::Integer | ColumnType::Real)
            | (Value::Real(_), ColumnType::Real)
            | (Value::Text(_), ColumnType::Text)
            | (Value::Blob(_), ColumnType::Blob)
            | (Value::Bool(_), ColumnType::Boolean)
    )
}
