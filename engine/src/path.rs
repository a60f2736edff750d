//! Layer paths: the sequence of layer indices a forward pass executes (DESIGN.md "Layer paths").
//!
//! A valid path lists layers in increasing order, each at most twice (a repeat runs the layer twice
//! in a row). It is equivalently a vector of per-layer counts in {0, 1, 2} — the router labels.

use std::fmt;
use std::str::FromStr;

/// Why a path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A layer index not below the model's layer count.
    #[error("position {pos}: layer {layer} does not exist (the model has {num_layers} layers)")]
    OutOfRange {
        /// The path position.
        pos: usize,
        /// The layer index at it.
        layer: usize,
        /// The model's layer count.
        num_layers: usize,
    },
    /// A layer below the one at the previous position.
    #[error("position {pos}: layer {layer} comes after layer {prev}; paths run layers in increasing order")]
    OutOfOrder {
        /// The path position.
        pos: usize,
        /// The layer at the previous position.
        prev: usize,
        /// The layer at `pos`.
        layer: usize,
    },
    /// A layer listed three or more times.
    #[error(
        "layer {layer} appears more than twice; a layer may be skipped, executed or repeated once"
    )]
    TooManyRepeats {
        /// The layer index.
        layer: usize,
    },
    /// A per-layer count above 2.
    #[error("per-layer count {count} for layer {layer} is not 0, 1 or 2")]
    BadCount {
        /// The layer index.
        layer: usize,
        /// The count given for it.
        count: u8,
    },
    /// Text that is not a comma-separated list of layer indices, `default` or `full`.
    #[error("cannot parse layer path `{text}`: {reason}")]
    Parse {
        /// The text as given.
        text: String,
        /// The entry that failed and why.
        reason: String,
    },
}

/// A validated layer path for a model with `num_layers` layers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerPath {
    layers: Vec<u16>,
    num_layers: usize,
}

impl LayerPath {
    /// Validates `layers` for a model with `num_layers` layers.
    pub fn new(layers: Vec<u16>, num_layers: usize) -> Result<Self, PathError> {
        let mut prev: Option<usize> = None;
        let mut run = 0;
        for (pos, &layer) in layers.iter().enumerate() {
            let layer = layer as usize;
            if layer >= num_layers {
                return Err(PathError::OutOfRange {
                    pos,
                    layer,
                    num_layers,
                });
            }
            match prev {
                Some(p) if layer < p => {
                    return Err(PathError::OutOfOrder {
                        pos,
                        prev: p,
                        layer,
                    })
                }
                Some(p) if layer == p => {
                    run += 1;
                    if run > 2 {
                        return Err(PathError::TooManyRepeats { layer });
                    }
                }
                _ => run = 1,
            }
            prev = Some(layer);
        }
        Ok(Self { layers, num_layers })
    }

    /// The full-depth path `0..num_layers`.
    pub fn full(num_layers: usize) -> Self {
        Self {
            layers: (0..num_layers as u16).collect(),
            num_layers,
        }
    }

    /// Builds a path from per-layer counts (0 skip, 1 execute, 2 repeat).
    pub fn from_counts(counts: &[u8]) -> Result<Self, PathError> {
        let mut layers = Vec::with_capacity(counts.len() * 2);
        for (layer, &count) in counts.iter().enumerate() {
            if count > 2 {
                return Err(PathError::BadCount { layer, count });
            }
            layers.extend(std::iter::repeat_n(layer as u16, count as usize));
        }
        Ok(Self {
            layers,
            num_layers: counts.len(),
        })
    }

    /// Parses `0,1,1,2,...` (or `default`/`full`) for a model with `num_layers` layers.
    pub fn parse(text: &str, num_layers: usize) -> Result<Self, PathError> {
        let trimmed = text.trim();
        if trimmed == "default" || trimmed == "full" {
            return Ok(Self::full(num_layers));
        }
        let layers = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed
                .split(',')
                .map(|s| {
                    s.trim().parse::<u16>().map_err(|e| PathError::Parse {
                        text: text.to_string(),
                        reason: format!("`{}`: {e}", s.trim()),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        Self::new(layers, num_layers)
    }

    /// Layer index executed at each path position.
    pub fn layers(&self) -> &[u16] {
        &self.layers
    }

    /// Number of path positions (layer executions per token).
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True for the path that runs no layer.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Number of layers of the model this path is for.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Per-layer counts: 0 skip, 1 execute, 2 repeat.
    pub fn counts(&self) -> Vec<u8> {
        let mut counts = vec![0u8; self.num_layers];
        for &l in &self.layers {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Number of distinct layers the path executes.
    pub fn distinct_layers(&self) -> usize {
        self.counts().iter().filter(|&&c| c > 0).count()
    }

    /// Length of the common prefix of two paths, in positions.
    pub fn common_prefix(&self, other: &LayerPath) -> usize {
        self.layers
            .iter()
            .zip(&other.layers)
            .take_while(|(a, b)| a == b)
            .count()
    }
}

impl fmt::Display for LayerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.layers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

/// A path string not yet checked against a model; `resolve` validates it once the layer count is
/// known (command lines parse paths before the model is loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSpec(String);

impl FromStr for PathSpec {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        // Syntax check now, range check in `resolve`.
        LayerPath::parse(s, usize::MAX)?;
        Ok(Self(s.to_string()))
    }
}

impl PathSpec {
    /// The path for a model with `num_layers` layers; fails when a layer is out of range.
    pub fn resolve(&self, num_layers: usize) -> Result<LayerPath, PathError> {
        LayerPath::parse(&self.0, num_layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_skips_and_repeats() {
        let p = LayerPath::parse("0,1,1,3", 4).unwrap();
        assert_eq!(p.counts(), vec![1, 2, 0, 1]);
        assert_eq!(p.distinct_layers(), 3);
        assert_eq!(LayerPath::from_counts(&p.counts()).unwrap(), p);
        assert_eq!(p.to_string(), "0,1,1,3");
        assert_eq!(LayerPath::parse("default", 3).unwrap().layers(), &[0, 1, 2]);
        assert!(LayerPath::parse("", 3).unwrap().is_empty());
    }

    #[test]
    fn rejects_invalid_paths() {
        assert_eq!(
            LayerPath::new(vec![0, 4], 4),
            Err(PathError::OutOfRange {
                pos: 1,
                layer: 4,
                num_layers: 4
            })
        );
        assert_eq!(
            LayerPath::new(vec![0, 2, 1], 4),
            Err(PathError::OutOfOrder {
                pos: 2,
                prev: 2,
                layer: 1
            })
        );
        assert_eq!(
            LayerPath::new(vec![1, 1, 1], 4),
            Err(PathError::TooManyRepeats { layer: 1 })
        );
        assert!(matches!(
            LayerPath::parse("0,x", 4),
            Err(PathError::Parse { .. })
        ));
        assert_eq!(
            LayerPath::from_counts(&[1, 3]),
            Err(PathError::BadCount { layer: 1, count: 3 })
        );
    }

    #[test]
    fn common_prefix_counts_equal_positions() {
        let a = LayerPath::parse("0,1,2,3", 4).unwrap();
        let b = LayerPath::parse("0,1,3", 4).unwrap();
        assert_eq!(a.common_prefix(&b), 2);
    }
}
