//! QuickScorer (Lucchese et al., SIGIR 2015) for tree ensembles whose trees have at most 64 leaves
//! and whose nodes all test `x <= t` (or all `x < t`): instead of walking each tree, a row visits,
//! feature by feature, only the nodes whose test it fails — in threshold order, so the scan stops at
//! the first test it passes — and clears from its tree's 64-bit leaf set the leaves of that node's
//! `yes` subtree. The row's leaf in each tree is then the lowest leaf still set. The work is
//! proportional to the failed tests, not to the trees' depth, and has no unpredictable branch.
//! Batches run 8 rows side by side (V-QuickScorer, SIGIR 2016): each node's test and update for all
//! of them is one vectorised select, over 32-bit leaf sets when every tree has at most 32 leaves.

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
    /// The masks in 32 bits, when every tree has at most 32 leaves (see [`QuickScorer::run`]).
    narrow: Vec<u32>,
}

impl FeatureNodes {
    #[inline(always)]
    fn narrow_masks(&self) -> &[u32] {
        &self.narrow
    }

    #[inline(always)]
    fn wide_masks(&self) -> &[u64] {
        &self.masks
    }
}

/// A forest laid out for QuickScorer.
#[derive(Debug)]
pub(crate) struct QuickScorer {
    features: Vec<FeatureNodes>,
    /// Per tree, the global leaf index of each of its leaves, in `yes`-first order.
    leaf_ids: Vec<Vec<u32>>,
    /// Tests are `x < t` (else `x <= t`).
    strict: bool,
    /// Every tree has at most 32 leaves: batches take the side-by-side scan.
    narrow: bool,
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

/// Rows scored side by side in a batch: one leaf set per row and tree, so that a node's test and
/// update for all of them are a few vector instructions.
const LANES: usize = 8;

/// A tree's leaf set: 32 bits when every tree has at most 32 leaves (8 rows in one 256-bit vector),
/// else 64.
trait LeafSet: Copy + std::ops::BitAndAssign {
    const ALL: Self;
    fn lowest(self) -> usize;
}

impl LeafSet for u32 {
    const ALL: u32 = u32::MAX;
    fn lowest(self) -> usize {
        self.trailing_zeros() as usize
    }
}

impl LeafSet for u64 {
    const ALL: u64 = u64::MAX;
    fn lowest(self) -> usize {
        self.trailing_zeros() as usize
    }
}

thread_local! {
    /// Each thread's per-tree leaf sets, grown to the largest forest seen.
    static LEAF_SETS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// The same for `LANES` rows at a time.
    static NARROW_SETS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static WIDE_SETS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
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
        let narrow = leaf_ids.iter().all(|ids| ids.len() <= 32);
        let features = features
            .into_iter()
            .map(|mut list| {
                list.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
                FeatureNodes {
                    thresholds: list.iter().map(|e| e.threshold).collect(),
                    trees: list.iter().map(|e| e.tree).collect(),
                    masks: list.iter().map(|e| e.mask).collect(),
                    // The low 32 bits hold every leaf of a tree that has at most 32.
                    narrow: if narrow { list.iter().map(|e| e.mask as u32).collect() } else { Vec::new() },
                }
            })
            .collect();
        Some(QuickScorer { features, leaf_ids, strict: f.strict, narrow })
    }

    /// Each row's leaf in each tree, handed to `leaf(row, global leaf)`; a row's leaves come tree by
    /// tree in order (so sums add up in the same order whichever scan runs).
    pub fn run(&self, x: &[f32], width: usize, rows: usize, leaf: impl FnMut(usize, usize)) {
        if rows < LANES / 2 {
            return self.run_rows(x, width, rows, leaf);
        }
        let (narrow, wide) = (FeatureNodes::narrow_masks, FeatureNodes::wide_masks);
        match (self.narrow, self.strict) {
            (true, true) => {
                NARROW_SETS.with(|s| self.run_lanes::<_, true>(&mut s.borrow_mut(), narrow, x, width, rows, leaf))
            }
            (true, false) => {
                NARROW_SETS.with(|s| self.run_lanes::<_, false>(&mut s.borrow_mut(), narrow, x, width, rows, leaf))
            }
            (false, true) => {
                WIDE_SETS.with(|s| self.run_lanes::<_, true>(&mut s.borrow_mut(), wide, x, width, rows, leaf))
            }
            (false, false) => {
                WIDE_SETS.with(|s| self.run_lanes::<_, false>(&mut s.borrow_mut(), wide, x, width, rows, leaf))
            }
        }
    }

    /// `LANES` rows side by side (V-QuickScorer, Lucchese et al., SIGIR 2016): a feature's nodes are
    /// scanned up to the last one any of the rows fails, and each node's test and leaf-set update
    /// run for every row at once, without a branch. A row whose value is missing takes its own
    /// scan for that feature.
    #[inline(always)]
    fn run_lanes<M: LeafSet, const STRICT: bool>(
        &self,
        sets: &mut Vec<M>,
        masks_of: impl Fn(&FeatureNodes) -> &[M],
        x: &[f32],
        width: usize,
        rows: usize,
        mut leaf: impl FnMut(usize, usize),
    ) {
        let trees = self.leaf_ids.len();
        // Each tree's block of sets starts a cache line (blocks split across two cost about a tenth
        // more on the 500-tree benchmark): the buffer's start is aligned by skipping up to a line.
        let spare = 64 / std::mem::size_of::<M>();
        if sets.len() < trees * LANES + spare {
            sets.resize(trees * LANES + spare, M::ALL);
        }
        let start = sets.as_ptr().align_offset(64).min(spare);
        let (sets, _) = sets[start..start + trees * LANES].as_chunks_mut::<LANES>();
        let mut r0 = 0;
        while r0 < rows {
            let b = (rows - r0).min(LANES);
            // A short last block repeats its last row.
            let bases: [usize; LANES] = std::array::from_fn(|k| (r0 + k.min(b - 1)) * width);
            sets.fill([M::ALL; LANES]);
            for (f, nodes) in self.features.iter().enumerate() {
                let masks = masks_of(nodes);
                let v: [f32; LANES] = std::array::from_fn(|k| x[bases[k] + f]);
                if v.iter().any(|v| v.is_nan()) {
                    for (k, &v) in v.iter().enumerate() {
                        let failed = self.failed(nodes, v);
                        for (&tree, &mask) in nodes.trees[..failed].iter().zip(&masks[..failed]) {
                            if !v.is_nan() || tree & NAN_PASSES == 0 {
                                sets[(tree & !NAN_PASSES) as usize][k] &= mask;
                            }
                        }
                    }
                    continue;
                }
                // A failed prefix grows with the value: the largest value's is the longest.
                let failed = self.failed(nodes, v.iter().copied().fold(f32::NEG_INFINITY, f32::max));
                let entries = nodes.thresholds[..failed].iter().zip(&nodes.trees[..failed]).zip(&masks[..failed]);
                for ((&t, &tree), &mask) in entries {
                    let set = &mut sets[(tree & !NAN_PASSES) as usize];
                    // All ones where the row passes: the mask applies only where it fails. Written
                    // as a select over a whole array (and `STRICT` a constant) so that it vectorises.
                    let keep: [M; LANES] = std::array::from_fn(|k| {
                        let fails = if STRICT { t <= v[k] } else { t < v[k] };
                        if fails {
                            mask
                        } else {
                            M::ALL
                        }
                    });
                    for (s, keep) in set.iter_mut().zip(keep) {
                        *s &= keep;
                    }
                }
            }
            for (set, ids) in sets.iter().zip(&self.leaf_ids) {
                for (k, s) in set.iter().enumerate().take(b) {
                    leaf(r0 + k, ids[s.lowest()] as usize);
                }
            }
            r0 += b;
        }
    }

    /// How many of `nodes` (a prefix, by threshold) `v` fails; a missing value: all of them (the
    /// caller skips those that send it to `yes`).
    #[inline(always)]
    fn failed(&self, nodes: &FeatureNodes, v: f32) -> usize {
        if v.is_nan() {
            nodes.thresholds.len()
        } else if self.strict {
            nodes.thresholds.partition_point(|t| *t <= v)
        } else {
            nodes.thresholds.partition_point(|t| *t < v)
        }
    }

    /// One row at a time.
    // A function of its own: inlined into the tree ensemble's `run` beside the other layouts, one
    // row took a third longer (4.7 → 6.3 µs for 500 trees).
    #[inline(never)]
    fn run_rows(&self, x: &[f32], width: usize, rows: usize, mut leaf: impl FnMut(usize, usize)) {
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

#[cfg(test)]
mod tests {
    //! Both scans, one row at a time and rows side by side (32- and 64-bit leaf sets, short last
    //! blocks, missing values), against a plain walk of random forests.

    use super::*;
    use crate::random_forest::{Flat, Rng};

    #[test]
    fn both_scans_reach_the_leaves_a_plain_walk_reaches() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let width = 4;
        let (mut narrow, mut wide) = (0, 0);
        for case in 0..300 {
            let strict = case % 2 == 1;
            let mut flat = Flat::default();
            for _ in 0..1 + rng.below(10) {
                let depth = 3 + rng.below(7) as u32;
                let root = flat.grow(&mut rng, depth, width);
                flat.roots.push(root);
            }
            let Some(quick) = QuickScorer::new(&flat.forest(width, strict)) else { continue };
            if quick.narrow {
                narrow += 1;
            } else {
                wide += 1;
            }
            let rows = 1 + rng.below(30);
            let x = rng.rows(rows, width);
            let expected = flat.leaves(&x, width, strict);
            let mut scanned = vec![Vec::new(); rows];
            quick.run(&x, width, rows, |r, leaf| scanned[r].push(leaf));
            assert_eq!(scanned, expected, "case {case}: {rows} rows, strict {strict}, narrow {}", quick.narrow);
            let mut one_by_one = vec![Vec::new(); rows];
            quick.run_rows(&x, width, rows, |r, leaf| one_by_one[r].push(leaf));
            assert_eq!(one_by_one, expected, "case {case}: one row at a time");
        }
        assert!(narrow > 20 && wide > 20, "both leaf-set widths tested: {narrow} narrow, {wide} wide");
    }
}
