//! The one mapping between the contract's column kinds ([`drllm_contract::record::Kind`]) and
//! Arrow: the writer builds each column of [`COLUMNS`](drllm_contract::record::COLUMNS) from its
//! cells here, and the reader turns each column back into cells here, so a new column needs no
//! code in this crate.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, ListBuilder, StringBuilder, TimestampMillisecondBuilder,
    UInt16Builder, UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, TimestampMillisecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, ListArray};
use drllm_contract::record::{Cell, Kind};

type Res<T> = std::result::Result<T, String>;

/// The Arrow array of one column of `kind` holding `cells` (each of that kind).
pub(crate) fn build(kind: Kind, cells: impl Iterator<Item = Cell>) -> Res<ArrayRef> {
    let wrong = |c: &Cell| format!("a {:?} cell in a {kind:?} column", c.kind());
    macro_rules! simple {
        ($builder:expr, $($variant:ident($v:ident) => $append:expr),+) => {{
            let mut b = $builder;
            for c in cells {
                match c {
                    $(Cell::$variant($v) => $append(&mut b, $v),)+
                    other => return Err(wrong(&other)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match kind {
        Kind::Str => {
            simple!(StringBuilder::new(), Str(v) => |b: &mut StringBuilder, v: String| b.append_value(v))
        }
        Kind::OptStr => {
            simple!(StringBuilder::new(), OptStr(v) => |b: &mut StringBuilder, v: Option<String>| b.append_option(v))
        }
        Kind::Bool => {
            simple!(BooleanBuilder::new(), Bool(v) => |b: &mut BooleanBuilder, v| b.append_value(v))
        }
        Kind::U16 => {
            simple!(UInt16Builder::new(), U16(v) => |b: &mut UInt16Builder, v| b.append_value(v))
        }
        Kind::U32 => {
            simple!(UInt32Builder::new(), U32(v) => |b: &mut UInt32Builder, v| b.append_value(v))
        }
        Kind::U64 => {
            simple!(UInt64Builder::new(), U64(v) => |b: &mut UInt64Builder, v| b.append_value(v))
        }
        Kind::F64 => {
            simple!(Float64Builder::new(), F64(v) => |b: &mut Float64Builder, v| b.append_value(v))
        }
        Kind::OptF64 => {
            simple!(Float64Builder::new(), OptF64(v) => |b: &mut Float64Builder, v| b.append_option(v))
        }
        Kind::TimestampMs => {
            simple!(TimestampMillisecondBuilder::new().with_timezone("UTC"), TimestampMs(v) => |b: &mut TimestampMillisecondBuilder, v| b.append_value(v))
        }
        Kind::U16s => {
            simple!(ListBuilder::new(UInt16Builder::new()), U16s(v) => |b: &mut ListBuilder<UInt16Builder>, v: Vec<u16>| b.append_value(v.into_iter().map(Some)))
        }
        Kind::U8s => {
            simple!(ListBuilder::new(UInt8Builder::new()), U8s(v) => |b: &mut ListBuilder<UInt8Builder>, v: Vec<u8>| b.append_value(v.into_iter().map(Some)))
        }
        Kind::F64s => {
            simple!(ListBuilder::new(Float64Builder::new()), F64s(v) => |b: &mut ListBuilder<Float64Builder>, v: Vec<f64>| b.append_value(v.into_iter().map(Some)))
        }
        Kind::Paths => {
            simple!(ListBuilder::new(ListBuilder::new(UInt16Builder::new())), Paths(v) => |b: &mut ListBuilder<ListBuilder<UInt16Builder>>, v: Vec<Vec<u16>>| {
                for p in v {
                    b.values().append_value(p.into_iter().map(Some));
                }
                b.append(true)
            })
        }
    })
}

/// The values of a primitive column, refusing another type.
fn prim<T: ArrowPrimitiveType>(a: &dyn Array) -> Res<Vec<Option<T::Native>>> {
    let p = a.as_primitive_opt::<T>().ok_or("has the wrong type")?;
    Ok((0..p.len())
        .map(|i| p.is_valid(i).then(|| p.value(i)))
        .collect())
}

/// Each row of a list column of primitives (null rows read as empty).
fn lists<T: ArrowPrimitiveType>(a: &dyn Array) -> Res<Vec<Vec<T::Native>>> {
    let l: &ListArray = a.as_list_opt::<i32>().ok_or("is not a list")?;
    (0..l.len())
        .map(|i| {
            if l.is_null(i) {
                return Ok(Vec::new());
            }
            let v = l.value(i);
            let p = v.as_primitive_opt::<T>().ok_or("holds the wrong type")?;
            Ok(p.values().to_vec())
        })
        .collect()
}

/// The cells of an Arrow column read as `kind`; an error says what is wrong with the column.
/// Nulls where the kind has none read as the type's empty value.
pub(crate) fn cells(kind: Kind, a: &dyn Array) -> Res<Vec<Cell>> {
    fn each<T, C>(v: Vec<Option<T>>, f: impl Fn(T) -> C) -> Vec<C>
    where
        T: Default,
    {
        v.into_iter().map(|x| f(x.unwrap_or_default())).collect()
    }
    let strings = || -> Res<Vec<Option<String>>> {
        let s = a.as_string_opt::<i32>().ok_or("is not a string column")?;
        Ok((0..s.len())
            .map(|i| s.is_valid(i).then(|| s.value(i).to_string()))
            .collect())
    };
    Ok(match kind {
        Kind::Str => each(strings()?, Cell::Str),
        Kind::OptStr => strings()?.into_iter().map(Cell::OptStr).collect(),
        Kind::Bool => {
            let b = a.as_boolean_opt().ok_or("is not boolean")?;
            (0..b.len())
                .map(|i| Cell::Bool(b.is_valid(i) && b.value(i)))
                .collect()
        }
        Kind::U16 => each(prim::<UInt16Type>(a)?, Cell::U16),
        Kind::U32 => each(prim::<UInt32Type>(a)?, Cell::U32),
        Kind::U64 => each(prim::<UInt64Type>(a)?, Cell::U64),
        Kind::F64 => each(prim::<Float64Type>(a)?, Cell::F64),
        Kind::OptF64 => prim::<Float64Type>(a)?
            .into_iter()
            .map(Cell::OptF64)
            .collect(),
        Kind::TimestampMs => each(prim::<TimestampMillisecondType>(a)?, Cell::TimestampMs),
        Kind::U16s => lists::<UInt16Type>(a)?
            .into_iter()
            .map(Cell::U16s)
            .collect(),
        Kind::U8s => lists::<UInt8Type>(a)?.into_iter().map(Cell::U8s).collect(),
        Kind::F64s => lists::<Float64Type>(a)?
            .into_iter()
            .map(Cell::F64s)
            .collect(),
        Kind::Paths => {
            let l = a.as_list_opt::<i32>().ok_or("is not a list of lists")?;
            (0..l.len())
                .map(|i| {
                    if l.is_null(i) {
                        return Ok(Cell::Paths(Vec::new()));
                    }
                    lists::<UInt16Type>(l.value(i).as_ref()).map(Cell::Paths)
                })
                .collect::<Res<_>>()?
        }
    })
}
