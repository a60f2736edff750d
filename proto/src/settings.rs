//! The run settings between their typed Rust form ([`drllm_records::RunSettings`], what the job,
//! the search and the records use) and their protocol messages. Every enum value has its own
//! protocol number; a number this build does not know is an error, never a silent default.

use drllm_records::settings as rs;

use crate::v1;

/// A settings message this build cannot read (a newer peer, or a missing field).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("run settings from the coordinator: {0} (are coordinator and worker the same version?)")]
pub struct SettingsError(String);

impl From<&rs::RunSettings> for v1::RunSettings {
    fn from(s: &rs::RunSettings) -> Self {
        let (r, c) = (&s.reward, &s.search);
        let mode = match r.mode {
            rs::RewardMode::Generate => v1::RewardMode::Generate,
            rs::RewardMode::ChoiceLoglik => v1::RewardMode::ChoiceLoglik,
        };
        let style = match r.style {
            None => v1::PromptStyle::ModelDefault,
            Some(rs::PromptStyle::Instruct) => v1::PromptStyle::Instruct,
            Some(rs::PromptStyle::Base) => v1::PromptStyle::Base,
        };
        v1::RunSettings {
            reward: Some(v1::RewardSettings {
                mode: mode.into(),
                style: style.into(),
                early_stop: r.early_stop,
                length_normalized: r.length_normalized,
            }),
            search: Some(v1::SearchSettings {
                num_simulations: c.num_simulations as u64,
                exploration: c.exploration,
                length_penalty: c.length_penalty,
                random_prob: c.random_prob,
                max_len_factor: c.max_len_factor as u64,
                seed: c.seed,
                success: match c.success {
                    rs::SuccessRule::Correct => v1::SuccessRule::Correct,
                    rs::SuccessRule::Margin => v1::SuccessRule::Margin,
                    rs::SuccessRule::Agree => v1::SuccessRule::Agree,
                }
                .into(),
                min_margin: c.min_margin,
                agree_fraction: c.agree_fraction,
                stop: match c.stop {
                    rs::StopMode::Paper => v1::StopMode::Paper,
                    rs::StopMode::Budget => v1::StopMode::Budget,
                }
                .into(),
                expansion: match c.expansion {
                    rs::Expansion::Paper => v1::Expansion::Paper,
                    rs::Expansion::Tree => v1::Expansion::Tree,
                }
                .into(),
                widen_exponent: c.widen_exponent,
                strategy: match c.strategy {
                    rs::Strategy::Mcts => v1::Strategy::Mcts,
                    rs::Strategy::Probe => v1::Strategy::Probe,
                    rs::Strategy::ProbeSkips => v1::Strategy::ProbeSkips,
                }
                .into(),
            }),
        }
    }
}

/// Reads a protocol enum number, naming the field when it is unknown.
fn known<T: TryFrom<i32>>(field: &str, v: i32) -> Result<T, SettingsError> {
    T::try_from(v).map_err(|_| SettingsError(format!("unknown {field} {v}")))
}

impl TryFrom<&v1::RunSettings> for rs::RunSettings {
    type Error = SettingsError;

    fn try_from(m: &v1::RunSettings) -> Result<Self, SettingsError> {
        let missing = |f: &str| SettingsError(format!("no {f}"));
        let r = m
            .reward
            .as_ref()
            .ok_or_else(|| missing("reward settings"))?;
        let c = m
            .search
            .as_ref()
            .ok_or_else(|| missing("search settings"))?;
        let mode = match known("reward mode", r.mode)? {
            v1::RewardMode::Generate => rs::RewardMode::Generate,
            v1::RewardMode::ChoiceLoglik => rs::RewardMode::ChoiceLoglik,
            v1::RewardMode::Unspecified => return Err(missing("reward mode")),
        };
        let style = match known("prompt style", r.style)? {
            v1::PromptStyle::ModelDefault => None,
            v1::PromptStyle::Instruct => Some(rs::PromptStyle::Instruct),
            v1::PromptStyle::Base => Some(rs::PromptStyle::Base),
        };
        let search = rs::SearchConfig {
            num_simulations: c.num_simulations as usize,
            exploration: c.exploration,
            length_penalty: c.length_penalty,
            random_prob: c.random_prob,
            max_len_factor: c.max_len_factor as usize,
            seed: c.seed,
            success: match known("success rule", c.success)? {
                v1::SuccessRule::Correct => rs::SuccessRule::Correct,
                v1::SuccessRule::Margin => rs::SuccessRule::Margin,
                v1::SuccessRule::Agree => rs::SuccessRule::Agree,
            },
            min_margin: c.min_margin,
            agree_fraction: c.agree_fraction,
            stop: match known("stop mode", c.stop)? {
                v1::StopMode::Paper => rs::StopMode::Paper,
                v1::StopMode::Budget => rs::StopMode::Budget,
            },
            expansion: match known("expansion", c.expansion)? {
                v1::Expansion::Paper => rs::Expansion::Paper,
                v1::Expansion::Tree => rs::Expansion::Tree,
            },
            widen_exponent: c.widen_exponent,
            strategy: match known("strategy", c.strategy)? {
                v1::Strategy::Mcts => rs::Strategy::Mcts,
                v1::Strategy::Probe => rs::Strategy::Probe,
                v1::Strategy::ProbeSkips => rs::Strategy::ProbeSkips,
            },
        };
        Ok(rs::RunSettings {
            reward: rs::RewardSettings {
                mode,
                style,
                early_stop: r.early_stop,
                length_normalized: r.length_normalized,
            },
            search,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every named choice and non-default number survives the trip through the protocol.
    #[test]
    fn run_settings_round_trip_and_unknown_values_are_refused() {
        let base = rs::RunSettings::default();
        let mut agree = base.clone();
        agree.search.success = rs::SuccessRule::Agree;
        let mut skips = base.clone();
        skips.search.strategy = rs::Strategy::ProbeSkips;
        let mut variants = vec![base.clone(), agree, skips];
        for (mode, style) in [
            (rs::RewardMode::Generate, Some(rs::PromptStyle::Base)),
            (
                rs::RewardMode::ChoiceLoglik,
                Some(rs::PromptStyle::Instruct),
            ),
        ] {
            let mut s = base.clone();
            s.reward = rs::RewardSettings {
                mode,
                style,
                early_stop: false,
                length_normalized: true,
            };
            s.search = rs::SearchConfig {
                num_simulations: 123,
                exploration: 0.25,
                length_penalty: 7.5,
                random_prob: 0.0,
                max_len_factor: 3,
                seed: u64::MAX,
                success: rs::SuccessRule::Margin,
                min_margin: 2.5,
                agree_fraction: 0.25,
                stop: rs::StopMode::Budget,
                expansion: rs::Expansion::Tree,
                widen_exponent: 0.75,
                strategy: rs::Strategy::Probe,
            };
            variants.push(s);
        }
        for s in variants {
            let m = v1::RunSettings::from(&s);
            assert_eq!(rs::RunSettings::try_from(&m).unwrap(), s);
        }
        let mut m = v1::RunSettings::from(&base);
        m.reward.as_mut().unwrap().style = 9;
        let e = rs::RunSettings::try_from(&m).unwrap_err().to_string();
        assert!(e.contains("unknown prompt style 9"), "{e}");
        m.reward = None;
        assert!(rs::RunSettings::try_from(&m).is_err());
    }
}
