//! The "simplifies to zero" half of the sympy emulation (see [`super::expr`] for the parsing half):
//! the parsed `(gold)-(pred)` is evaluated in complex arithmetic at several fixed pseudo-random
//! points for its symbols (sympy's symbols are complex, so `sqrt(x^2)` is not `x`), and called
//! zero when every evaluation vanishes within its running bound on rounding errors. Where floats
//! are involved, sympy's number semantics decide instead: see [`simplifies_to_zero`].

use super::expr::{contains_float, symbols, Ast, Func, Konst};

/// Unit roundoff of f64, and how far beyond the running error bound a zero may land.
const EPS: f64 = f64::EPSILON / 2.0;
const SAFETY: f64 = 16.0;
const TRIALS: u64 = 4;
const IRRATIONAL_SHIFT: f64 = 1.001;

/// Whether sympy's `simplify` would turn the parsed difference into 0. Pure numbers (fractions
/// and floats) are computed the way sympy computes them; anything else takes the numeric test,
/// where a float must moreover not cancel an exact irrational (`1.4142135623730951` is not
/// `sqrt(2)` for sympy), so with floats the verdict must survive scaling those constants.
pub(super) fn simplifies_to_zero(ast: &Ast) -> bool {
    if let Some(difference) = numeric(ast) {
        return difference.is_zero();
    }
    is_zero(ast, 1.0) && (!contains_float(ast) || is_zero(ast, IRRATIONAL_SHIFT))
}

/// A complex number (sympy's symbols are complex).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct C {
    pub(super) re: f64,
    pub(super) im: f64,
}

impl C {
    pub(super) const fn real(re: f64) -> Self {
        C { re, im: 0.0 }
    }
    fn add(self, o: C) -> C {
        C {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    fn sub(self, o: C) -> C {
        C {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }
    fn mul(self, o: C) -> C {
        C {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    fn div(self, o: C) -> C {
        let d = o.re * o.re + o.im * o.im;
        C {
            re: (self.re * o.re + self.im * o.im) / d,
            im: (self.im * o.re - self.re * o.im) / d,
        }
    }
    fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    fn ln(self) -> C {
        C {
            re: self.abs().ln(),
            im: self.im.atan2(self.re),
        }
    }
    fn exp(self) -> C {
        let m = self.re.exp();
        C {
            re: m * self.im.cos(),
            im: m * self.im.sin(),
        }
    }
    fn sqrt(self) -> C {
        let r = self.abs();
        let re = ((r + self.re) / 2.0).sqrt();
        let im = ((r - self.re) / 2.0).sqrt();
        C {
            re,
            im: if self.im < 0.0 { -im } else { im },
        }
    }
    pub(super) fn is_zero(self) -> bool {
        self.re == 0.0 && self.im == 0.0
    }
    /// Principal power; integer exponents by repeated squaring (exact like sympy's).
    fn pow(self, e: C) -> C {
        if e.im == 0.0 && e.re.fract() == 0.0 && e.re.abs() <= 1e6 {
            let mut n = e.re.abs() as u64;
            let (mut acc, mut base) = (C::real(1.0), self);
            while n > 0 {
                if n & 1 == 1 {
                    acc = acc.mul(base);
                }
                base = base.mul(base);
                n >>= 1;
            }
            return if e.re < 0.0 {
                C::real(1.0).div(acc)
            } else {
                acc
            };
        }
        if self.is_zero() {
            return if e.re > 0.0 {
                C::real(0.0)
            } else {
                C::real(f64::NAN)
            };
        }
        e.mul(self.ln()).exp()
    }
}

/// A fixed pseudo-random complex point (modulus 0.5 to 2, any argument) per symbol and trial.
fn point(symbol: usize, trial: u64) -> C {
    let mut h = (symbol as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (trial + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut unit = || {
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 32;
        (h >> 11) as f64 / (1u64 << 53) as f64
    };
    let (modulus, angle) = (0.5 + 1.5 * unit(), std::f64::consts::TAU * unit());
    C {
        re: modulus * angle.cos(),
        im: modulus * angle.sin(),
    }
}

/// An evaluated value with a running bound on its rounding error.
#[derive(Clone, Copy)]
struct Val {
    v: C,
    err: f64,
}

impl Val {
    fn new(v: C, err: f64) -> Option<Val> {
        v.abs().is_finite().then_some(Val {
            v,
            err: err + EPS * v.abs(),
        })
    }
    fn exact(v: C) -> Option<Val> {
        v.abs().is_finite().then_some(Val { v, err: 0.0 })
    }
    /// Relative error of this value (infinite for an inexact zero).
    fn rel(self) -> f64 {
        if self.err == 0.0 {
            0.0
        } else {
            self.err / self.v.abs()
        }
    }
}

/// Evaluation at one point. Exact irrational constants are multiplied by `shift` (1 for their
/// true value).
struct Eval<'a> {
    names: &'a [&'a str],
    values: Vec<C>,
    shift: f64,
}

impl Eval<'_> {
    fn eval(&self, ast: &Ast) -> Option<Val> {
        match ast {
            Ast::Num(lit) if lit.exact.is_some() && !lit.float => Val::exact(lit.value),
            Ast::Num(lit) => Val::new(lit.value, 0.0),
            Ast::Const(Konst::Pi) => Val::new(C::real(std::f64::consts::PI * self.shift), 0.0),
            Ast::Const(_) => None,
            Ast::Sym(name) => {
                Val::exact(self.values[self.names.iter().position(|n| *n == name.as_str())?])
            }
            Ast::Neg(a) => {
                let x = self.eval(a)?;
                Val::new(C::real(0.0).sub(x.v), x.err)
            }
            Ast::Call(f, a) => {
                let x = self.eval(a)?;
                let k = if exact_irrational(*f, a) {
                    self.shift
                } else {
                    1.0
                };
                let (v, err) = match f {
                    Func::Sqrt if x.v.is_zero() => (x.v, x.err.sqrt()),
                    Func::Sqrt => (x.v.sqrt(), x.err / (2.0 * x.v.sqrt().abs())),
                    Func::Ln => (x.v.ln(), x.rel()),
                };
                Val::new(
                    C {
                        re: v.re * k,
                        im: v.im * k,
                    },
                    err * k,
                )
            }
            Ast::Factorial(a) => Val::new(factorial(self.eval(a)?.v)?, 0.0),
            // sympy keeps `base**float` apart from exact powers and roots.
            Ast::Bin("**", _, b) if contains_float(b) => None,
            Ast::Bin(op, a, b) => binary(op, self.eval(a)?, self.eval(b)?),
        }
    }
}

fn binary(op: &str, x: Val, y: Val) -> Option<Val> {
    let (ax, ay) = (x.v.abs(), y.v.abs());
    match op {
        "+" => Val::new(x.v.add(y.v), x.err + y.err),
        "-" => Val::new(x.v.sub(y.v), x.err + y.err),
        "*" => Val::new(x.v.mul(y.v), ax * y.err + ay * x.err + x.err * y.err),
        "/" => {
            let v = x.v.div(y.v);
            Val::new(v, (x.err + v.abs() * y.err) / ay)
        }
        _ => {
            let v = x.v.pow(y.v);
            // d(x^y) = x^y (y dx/x + ln(x) dy), plus the roundings of repeated products.
            let from_base = if ay == 0.0 { 0.0 } else { ay * x.rel() };
            let from_exponent = if ax == 0.0 {
                0.0
            } else {
                x.v.ln().abs() * y.err
            };
            Val::new(v, (from_base + from_exponent + 64.0 * EPS) * v.abs())
        }
    }
}

fn factorial(v: C) -> Option<C> {
    let small_int = v.im == 0.0 && v.re.fract() == 0.0 && (0.0..=170.0).contains(&v.re);
    small_int.then(|| C::real((1..=v.re as u32).map(f64::from).product()))
}

/// Whether `sqrt(arg)` or `ln(arg)` is an irrational constant sympy keeps exact.
fn exact_irrational(f: Func, arg: &Ast) -> bool {
    let is_square = |n: i128| {
        let root = (n as f64).sqrt().round() as i128;
        (root.saturating_sub(1)..=root.saturating_add(1)).any(|r| r.checked_mul(r) == Some(n))
    };
    match (f, numeric(arg)) {
        (Func::Sqrt, Some(Num::Rat(p, q))) => !(is_square(p.saturating_abs()) && is_square(q)),
        (Func::Ln, Some(Num::Rat(p, q))) => p != q,
        _ => false,
    }
}

fn is_zero(ast: &Ast, shift: f64) -> bool {
    let mut names = Vec::new();
    symbols(ast, &mut names);
    (0..TRIALS).all(|trial| {
        let values = (0..names.len()).map(|k| point(k, trial)).collect();
        let eval = Eval {
            names: &names,
            values,
            shift,
        };
        eval.eval(ast).is_some_and(|d| d.v.abs() <= SAFETY * d.err)
    })
}

/// A number as sympy holds it when no symbol or irrational is involved: an exact fraction or a
/// 53-bit `Float`. Used to reproduce sympy's verdict on float arithmetic, where `3/10.0` is not
/// `3/10` (sympy divides an integer by a float through its reciprocal: two roundings).
#[derive(Clone, Copy, Debug)]
enum Num {
    Rat(i128, i128),
    Float(f64),
}

impl Num {
    fn is_zero(self) -> bool {
        match self {
            Num::Rat(p, _) => p == 0,
            Num::Float(f) => f == 0.0,
        }
    }
    fn to_f64(self) -> f64 {
        match self {
            Num::Rat(p, q) => p as f64 / q as f64,
            Num::Float(f) => f,
        }
    }
}

fn rat(p: i128, q: i128) -> Option<Num> {
    if q == 0 {
        return None;
    }
    let (mut a, mut b) = (p.unsigned_abs(), q.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let g = i128::try_from(a).ok()?.max(1) * q.signum();
    Some(Num::Rat(p.checked_div(g)?, q.checked_div(g)?))
}

fn numeric(ast: &Ast) -> Option<Num> {
    match ast {
        Ast::Num(lit) => match lit.exact {
            Some((p, q)) => rat(p, q),
            None => lit.float.then_some(Num::Float(lit.value.re)),
        },
        Ast::Neg(a) => match numeric(a)? {
            Num::Rat(p, q) => rat(p.checked_neg()?, q),
            Num::Float(f) => Some(Num::Float(-f)),
        },
        Ast::Bin(op, a, b) => combine(op, numeric(a)?, numeric(b)?),
        Ast::Sym(_) | Ast::Const(_) | Ast::Call(..) | Ast::Factorial(_) => None,
    }
}

fn combine(op: &str, x: Num, y: Num) -> Option<Num> {
    match (x, y) {
        (Num::Rat(a, b), Num::Rat(c, d)) => match op {
            "+" => rat(
                a.checked_mul(d)?.checked_add(c.checked_mul(b)?)?,
                b.checked_mul(d)?,
            ),
            "-" => rat(
                a.checked_mul(d)?.checked_sub(c.checked_mul(b)?)?,
                b.checked_mul(d)?,
            ),
            "*" => rat(a.checked_mul(c)?, b.checked_mul(d)?),
            "/" => rat(a.checked_mul(d)?, b.checked_mul(c)?),
            _ if d == 1 && c.unsigned_abs() <= 64 => {
                let n = u32::try_from(c.unsigned_abs()).ok()?;
                let (p, q) = (a.checked_pow(n)?, b.checked_pow(n)?);
                if c < 0 {
                    rat(q, p)
                } else {
                    rat(p, q)
                }
            }
            _ => None,
        },
        _ if op == "**" => None,
        (Num::Rat(..), Num::Float(f)) if op == "/" => Some(Num::Float(x.to_f64() * (1.0 / f))),
        _ => {
            let (a, b) = (x.to_f64(), y.to_f64());
            Some(Num::Float(match op {
                "+" => a + b,
                "-" => a - b,
                "*" => a * b,
                _ => a / b,
            }))
        }
    }
}
