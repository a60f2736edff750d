//! Decisions as class distributions: the training targets' shape (one row of skip / execute /
//! repeat weights per decision), shared by the metrics here and the trainer's loss.

/// One-hot rows (`n × 3`, row-major) of class indices: hard targets as distributions.
pub fn one_hot(y: &[u32]) -> Vec<f32> {
    let mut q = vec![0f32; y.len() * 3];
    for (i, &c) in y.iter().enumerate() {
        q[i * 3 + (c as usize).min(2)] = 1.0;
    }
    q
}

/// Per-layer decisions (0 skip, 1 execute, 2 repeat) as one-hot target distributions.
pub fn decision_labels(decisions: &[u8]) -> Vec<[f32; 3]> {
    decisions
        .iter()
        .map(|&d| {
            let mut q = [0.0; 3];
            q[d.min(2) as usize] = 1.0;
            q
        })
        .collect()
}
