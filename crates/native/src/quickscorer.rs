//! QuickScorer (Lucchese et al., SIGIR 2015) for tree ensembles whose trees have at most 64 leaves
//! and whose nodes all test `x <= t` (or all `x < t`): instead of walking each tree, a row visits,
//! feature by feature, only the nodes whose test it fails — in threshold order, so the scan stops at
//! the first test it passes — and clears from its tree's 64-bit leaf set the leaves of that node's
//! `yes` subtree. The row's leaf in each tree is then the lowest leaf still set. The work is
//! proportional to the failed tests, not to the trees' depth, and has no unpredictable branch.

use std::cell::RefCell;

/// One tree node as the scan sees it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    threshold: f32,
    /// The tree's index; the top bit: a missing (NaN) value passes this node's test.
    tree: u32,
    /// The tree's leaves that stay possible when the test fails (its `yes` subtree cleared).
    mask: u64,
}

const NAN_PASSES: u32 = 1 << 31;

/// One feature's nodes by threshold, ascending, as parallel arrays: the scan reads thresholds only,
/// the update trees and masks only.
#[derive(Debug, Default)]
struct FeatureNodes {
    thresholds: Vec<f32>,
    trees: Vec<u32>,
    masks: Vec<u64>,
}

/// A forest laid out for QuickScorer.
#[derive(Debug)]
pub(crate) struct QuickScorer {
    features: Vec<FeatureNodes>,
    /// Per tree, the global leaf index of each of its leaves, in `yes`-first order.
    leaf_ids: Vec<Vec<u32>>,
    /// Tests are `x < t` (else `x <= t`).
    strict: bool,
}

/// The forest's nodes: inner node `i` tests `features[i]` against `thresholds[i]`; children with
/// `leaf_flag` set are leaves (the rest is the global leaf index).
pub(crate) struct Forest<'a> {
    pub features: &'a [u32],
    pub thresholds: &'a [f32],
    pub yes: &'a [u32],
    pub no: &'a [u32],
    /// Per inner node: a missing value takes `yes`; empty when none does.
    pub missing_yes: &'a [bool],
    pub roots: &'a [u32],
    pub leaf_flag: u32,
    pub width: usize,
    pub strict: bool,
}

thread_local! {
    /// Each thread's per-tree leaf sets, grown to the largest forest seen.
    static LEAF_SETS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

impl QuickScorer {
    /// The layout, or `None` when some tree has more than 64 leaves.
    pub fn new(f: &Forest<'_>) -> Option<QuickScorer> {
        let mut features: Vec<Vec<Entry>> = vec![Vec::new(); f.width];
        let mut leaf_ids = Vec::with_capacity(f.roots.len());
        for (tree, &root) in f.roots.iter().enumerate() {
            // Leaves in yes-first order, and each inner node's yes-subtree leaf range.
            let mut order: Vec<u32> = Vec::new();
            let mut ranges: Vec<(u32, usize, usize)> = Vec::new();
            collect(f, root, &mut order, &mut ranges);
            if order.len() > 64 {
                return None;
            }
            for (node, lo, hi) in ranges {
                let yes_leaves = if hi - lo == 64 { u64::MAX } else { ((1u64 << (hi - lo)) - 1) << lo };
                let nan = if f.missing_yes.get(node as usize).copied().unwrap_or(false) { NAN_PASSES } else { 0 };
                features[f.features[node as usize] as usize].push(Entry {
                    threshold: f.thresholds[node as usize],
                    tree: tree as u32 | nan,
                    mask: !yes_leaves,
                });
            }
            leaf_ids.push(order);
        }
        let features = features
            .into_iter()
            .map(|mut list| {
                list.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
                FeatureNodes {
                    thresholds: list.iter().map(|e| e.threshold).collect(),
                    trees: list.iter().map(|e| e.tree).collect(),
                    masks: list.iter().map(|e| e.mask).collect(),
                }
            })
            .collect();
        Some(QuickScorer { features, leaf_ids, strict: f.strict })
    }

    /// Each row's leaf in each tree, handed to `leaf(row, global leaf)` tree by tree in order.
    pub fn run(&self, x: &[f32], width: usize, rows: usize, mut leaf: impl FnMut(usize, usize)) {
        LEAF_SETS.with(|sets| {
            let mut sets = sets.borrow_mut();
            let trees = self.leaf_ids.len();
            if sets.len() < trees {
                sets.resize(trees, 0);
            }
            let sets = &mut sets[..trees];
            for r in 0..rows {
                let row = &x[r * width..(r + 1) * width];
                sets.fill(u64::MAX);
                for (nodes, &v) in self.features.iter().zip(row) {
                    if v.is_nan() {
                        // NaN passes no comparison: every node fails unless it sends NaN to `yes`.
                        for (&tree, &mask) in nodes.trees.iter().zip(&nodes.masks) {
                            if tree & NAN_PASSES == 0 {
                                sets[tree as usize] &= mask;
                            }
                        }
                        continue;
                    }
                    // The tests this value fails, a prefix: `t < v` for `v <= t`, `t <= v` for `v < t`.
                    let failed = if self.strict {
                        nodes.thresholds.partition_point(|t| *t <= v)
                    } else {
                        nodes.thresholds.partition_point(|t| *t < v)
                    };
                    for (&tree, &mask) in nodes.trees[..failed].iter().zip(&nodes.masks[..failed]) {
                        sets[(tree & !NAN_PASSES) as usize] &= mask;
                    }
                }
                for (set, ids) in sets.iter().zip(&self.leaf_ids) {
                    leaf(r, ids[set.trailing_zeros() as usize] as usize);
                }
            }
        });
    }
}

/// Appends the leaves under `at` in yes-first order; records each inner node's yes-subtree range.
fn collect(f: &Forest<'_>, at: u32, order: &mut Vec<u32>, ranges: &mut Vec<(u32, usize, usize)>) {
    if at & f.leaf_flag != 0 {
        order.push(at & !f.leaf_flag);
        return;
    }
    let lo = order.len();
    collect(f, f.yes[at as usize], order, ranges);
    ranges.push((at, lo, order.len()));
    collect(f, f.no[at as usize], order, ranges);
}
