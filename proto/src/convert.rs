//! The contract's types ([`drllm_contract`]: examples, search records, run settings) to and from
//! their protocol messages. Each message is converted field by field through [`Wire`], from the
//! field lists the contract exports ([`drllm_contract::search_config_fields!`],
//! [`drllm_contract::search_record_fields!`]): both sides are struct literals, so a field that one
//! side has and the other lacks fails to compile. Decoding refuses what this build cannot
//! represent (an unknown enum number, a number too large, a missing message) with an error that
//! names the field, and [`decode_record`] / [`decode_example`] add the contract's own checks.

use drllm_contract as c;

use crate::v1;

/// A message this build cannot read: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct DecodeError {
    /// The field, as a path from the message decoded (`settings.search.strategy`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn err(field: &str, problem: impl Into<String>) -> DecodeError {
    DecodeError {
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// One field's value between its Rust type and its protocol type.
pub trait Wire: Sized {
    /// The protocol type.
    type W;
    /// The protocol value.
    fn to_wire(&self) -> Self::W;
    /// The Rust value, or why `w` (field `field`) cannot be one.
    fn from_wire(w: &Self::W, field: &str) -> Result<Self, DecodeError>;
}

/// Types that travel as they are.
macro_rules! same {
    ($($t:ty),+) => {$(
        impl Wire for $t {
            type W = $t;
            fn to_wire(&self) -> $t {
                self.clone()
            }
            fn from_wire(w: &$t, _: &str) -> Result<Self, DecodeError> {
                Ok(w.clone())
            }
        }
    )+};
}
same!(
    String,
    bool,
    u32,
    u64,
    i64,
    f64,
    Vec<u8>,
    Vec<f64>,
    Vec<String>,
    Option<f64>,
    Option<String>
);

/// Narrow integers travel widened; a value that does not fit is refused.
macro_rules! widened {
    ($($t:ty => $w:ty),+) => {$(
        impl Wire for $t {
            type W = $w;
            fn to_wire(&self) -> $w {
                *self as $w
            }
            fn from_wire(w: &$w, field: &str) -> Result<Self, DecodeError> {
                <$t>::try_from(*w).map_err(|_| err(field, format!("is {w}, more than {}", <$t>::MAX)))
            }
        }
    )+};
}
widened!(u16 => u32, usize => u64);

impl Wire for Option<u8> {
    type W = Option<u32>;
    fn to_wire(&self) -> Option<u32> {
        self.map(u32::from)
    }
    fn from_wire(w: &Option<u32>, field: &str) -> Result<Self, DecodeError> {
        w.map(|v| u8::try_from(v).map_err(|_| err(field, format!("is {v}, more than 255"))))
            .transpose()
    }
}

impl Wire for Vec<u16> {
    type W = Vec<u32>;
    fn to_wire(&self) -> Vec<u32> {
        self.iter().map(|&l| l as u32).collect()
    }
    fn from_wire(w: &Vec<u32>, field: &str) -> Result<Self, DecodeError> {
        w.iter().map(|l| u16::from_wire(l, field)).collect()
    }
}

impl Wire for Vec<Vec<u16>> {
    type W = Vec<v1::Path>;
    fn to_wire(&self) -> Vec<v1::Path> {
        self.iter()
            .map(|p| v1::Path {
                layers: p.to_wire(),
            })
            .collect()
    }
    fn from_wire(w: &Vec<v1::Path>, field: &str) -> Result<Self, DecodeError> {
        w.iter()
            .map(|p| Vec::<u16>::from_wire(&p.layers, field))
            .collect()
    }
}

/// A named choice travels as its protocol enum's number, matched by variant name; a number this
/// build does not know (a newer peer) is refused, never read as a default.
macro_rules! wire_enum {
    ($rust:ty => $msg:ident { $($v:ident),+ }) => {
        impl Wire for $rust {
            type W = i32;
            fn to_wire(&self) -> i32 {
                match self {
                    $(<$rust>::$v => v1::$msg::$v as i32,)+
                }
            }
            fn from_wire(w: &i32, field: &str) -> Result<Self, DecodeError> {
                match v1::$msg::try_from(*w) {
                    $(Ok(v1::$msg::$v) => Ok(<$rust>::$v),)+
                    #[allow(unreachable_patterns)]
                    _ => Err(err(field, format!("has the unknown value {w}"))),
                }
            }
        }
    };
}
wire_enum!(c::RewardMode => RewardMode { Generate, ChoiceLoglik });
wire_enum!(c::SuccessRule => SuccessRule { Correct, Margin, Agree });
wire_enum!(c::StopMode => StopMode { Paper, Budget });
wire_enum!(c::Expansion => Expansion { Paper, Tree });
wire_enum!(c::Strategy => Strategy { Mcts, Probe, ProbeSkips });
wire_enum!(c::AnswerKind => AnswerKind { Letter, Math });

impl Wire for Option<c::PromptStyle> {
    type W = i32;
    fn to_wire(&self) -> i32 {
        (match self {
            None => v1::PromptStyle::ModelDefault,
            Some(c::PromptStyle::Instruct) => v1::PromptStyle::Instruct,
            Some(c::PromptStyle::Base) => v1::PromptStyle::Base,
        }) as i32
    }
    fn from_wire(w: &i32, field: &str) -> Result<Self, DecodeError> {
        match v1::PromptStyle::try_from(*w) {
            Ok(v1::PromptStyle::ModelDefault) => Ok(None),
            Ok(v1::PromptStyle::Instruct) => Ok(Some(c::PromptStyle::Instruct)),
            Ok(v1::PromptStyle::Base) => Ok(Some(c::PromptStyle::Base)),
            Err(_) => Err(err(field, format!("has the unknown value {w}"))),
        }
    }
}

/// A contract struct travels as a message, field by field. As a field of another message it is
/// optional in proto3; a missing one is refused. Also gives the struct ↔ message conversions.
macro_rules! wire_message {
    ($rust:ty => $msg:ty; $($f:ident),+) => {
        impl Wire for $rust {
            type W = Option<$msg>;
            fn to_wire(&self) -> Option<$msg> {
                Some(<$msg>::from(self))
            }
            fn from_wire(w: &Option<$msg>, field: &str) -> Result<Self, DecodeError> {
                let m = w.as_ref().ok_or_else(|| err(field, "is missing"))?;
                <Self as DecodeFields<$msg>>::decode(m, &format!("{field}."))
            }
        }

        impl From<&$rust> for $msg {
            fn from(r: &$rust) -> Self {
                Self { $($f: r.$f.to_wire(),)+ }
            }
        }

        impl TryFrom<&$msg> for $rust {
            type Error = DecodeError;
            fn try_from(m: &$msg) -> Result<Self, DecodeError> {
                <Self as DecodeFields<$msg>>::decode(m, "")
            }
        }

        impl DecodeFields<$msg> for $rust {
            fn decode(m: &$msg, prefix: &str) -> Result<Self, DecodeError> {
                Ok(Self {
                    $($f: Wire::from_wire(&m.$f, &format!("{prefix}{}", stringify!($f)))?,)+
                })
            }
        }
    };
}

/// Decoding of a message's fields, each error naming the field under `prefix`.
trait DecodeFields<M>: Sized {
    fn decode(m: &M, prefix: &str) -> Result<Self, DecodeError>;
}

wire_message!(c::RewardSettings => v1::RewardSettings; mode, style, early_stop, length_normalized);
wire_message!(c::RunSettings => v1::RunSettings; reward, search);
wire_message!(c::Example => v1::Example; id, dataset, split, question, choices, answer, kind, level);

macro_rules! search_config_message {
    ($($f:ident),+) => {
        wire_message!(c::SearchConfig => v1::SearchSettings; $($f),+);
    };
}
c::search_config_fields!(search_config_message);

macro_rules! search_record_message {
    ($($f:ident),+) => {
        wire_message!(c::SearchRecord => v1::SearchRecord; $($f),+);
    };
}
c::search_record_fields!(search_record_message);

/// A record from a worker: decoded, then held to the schema's rules.
pub fn decode_record(m: &v1::SearchRecord) -> Result<c::SearchRecord, DecodeError> {
    let r = c::SearchRecord::try_from(m)?;
    r.validate().map_err(|e| err(e.field, e.problem))?;
    Ok(r)
}

/// An example from the coordinator: decoded, then checked.
pub fn decode_example(m: &v1::Example) -> Result<c::Example, DecodeError> {
    let e = c::Example::try_from(m)?;
    e.validate().map_err(|e| err(e.field, e.problem))?;
    Ok(e)
}

#[cfg(test)]
mod tests;
