//! Shallow forests laid out as perfect binary trees: every tree is padded to the forest's depth
//! (a leaf above it becomes a node whose two subtrees are copies of that leaf), so a node's
//! children are implicit (`2i + 1` for `yes`, `2i + 2` for `no`), every walk takes exactly `depth`
//! steps with no data-dependent exit, and a step is a load, a comparison and an add. Blocks of rows
//! walk one tree together so that their steps overlap. Very shallow forests whose leaves each add
//! one value are swept instead of walked (see [`SWEEP_MAX_DEPTH`]). Only for forests of depth at
//! most [`MAX_DEPTH`] whose nodes all test `x <= t` (or all `x < t`): padding grows a tree to
//! `2^depth` leaves, so deeper forests keep QuickScorer or the lockstep walk.

use std::cell::RefCell;

use super::quickscorer::Forest;

/// The deepest forest laid out this way (64 leaves per tree, 756 bytes of nodes and leaves).
pub(crate) const MAX_DEPTH: u32 = 6;

/// Rows walked together through one tree.
const BLOCK: usize = 8;

/// Set in a node's feature: a missing (NaN) value takes the `yes` branch.
const NAN_YES: u32 = 1 << 31;

/// Forests at most this deep are swept rather than walked when summing: every node is compared
/// for [`BLOCK`] rows at once (lanes the compiler vectorises), the outcomes packed one bit per node,
/// and each row's leaf slot read from [`slot_table`]. A tree costs `2^depth - 1` comparisons instead
/// of `depth` dependent loads, which pays only while trees are this shallow (the depth-4 table is
/// 32 KB).
const SWEEP_MAX_DEPTH: u32 = 4;

/// Forests at most this deep, and small enough (see [`LUT_MAX_BYTES`]), sweep into a table of each
/// tree's leaf value by the packed test bits: one load per row and tree instead of the slot
/// table's and then the leaf's (a fifth less time for 60 trees of depth 3).
const LUT_MAX_DEPTH: u32 = 3;

/// The largest such table (60 trees of depth 3 take 30 KB: 128 values per tree).
const LUT_MAX_BYTES: usize = 64 << 10;

thread_local! {
    /// Each thread's block of rows transposed to columns (`width` lanes of [`BLOCK`] values).
    static COLUMNS: RefCell<Vec<[f32; BLOCK]>> = const { RefCell::new(Vec::new()) };
}

/// A forest of padded trees.
#[derive(Debug)]
pub(crate) struct Perfect {
    depth: u32,
    /// Per tree, its `2^depth - 1` inner nodes in level order: (feature, `NAN_YES`-tagged; threshold).
    nodes: Vec<(u32, f32)>,
    /// Per tree, the global leaf index of each of its `2^depth` leaf slots, left to right.
    leaves: Vec<u32>,
    /// For a forest whose every leaf adds one value to one score: that value per leaf slot.
    slot_values: Option<Vec<f32>>,
    /// The same per tree by its packed test bits (shallow, small forests; see [`LUT_MAX_DEPTH`]).
    bit_values: Option<Vec<f32>>,
    trees: usize,
    /// Tests are `x < t` (else `x <= t`).
    strict: bool,
    /// Some node sends a missing value to `yes` (else the walk skips the check).
    nan_yes: bool,
}

impl Perfect {
    /// The layout, or `None` when some tree is deeper than [`MAX_DEPTH`].
    pub fn new(f: &Forest<'_>) -> Option<Perfect> {
        let depth = f.roots.iter().map(|&r| depth_of(f, r)).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return None;
        }
        let inner = (1usize << depth) - 1;
        let mut nodes = vec![(0u32, 0f32); f.roots.len() * inner];
        let mut leaves = vec![0u32; f.roots.len() * (inner + 1)];
        for (tree, &root) in f.roots.iter().enumerate() {
            let mut layout = Layout {
                f,
                depth,
                nodes: &mut nodes[tree * inner..(tree + 1) * inner],
                leaves: &mut leaves[tree * (inner + 1)..(tree + 1) * (inner + 1)],
            };
            layout.place(root, 0, 0);
        }
        let nan_yes = nodes.iter().any(|(feature, _)| feature & NAN_YES != 0);
        Some(Perfect {
            depth,
            nodes,
            leaves,
            slot_values: None,
            bit_values: None,
            trees: f.roots.len(),
            strict: f.strict,
            nan_yes,
        })
    }

    /// Keeps each leaf's one value (by global leaf) in its slots, for [`Perfect::sum`].
    pub fn with_leaf_values(mut self, values: &[f32]) -> Perfect {
        let slot_values: Vec<f32> = self.leaves.iter().map(|&l| values[l as usize]).collect();
        let (slots, entries) = (1usize << self.depth, 1usize << ((1usize << self.depth) - 1));
        if (1..=LUT_MAX_DEPTH).contains(&self.depth) && self.trees * entries * 4 <= LUT_MAX_BYTES {
            let table = slot_table(self.depth);
            let by_bits =
                slot_values.chunks_exact(slots).flat_map(|tree| table.iter().map(|&slot| tree[slot as usize]));
            self.bit_values = Some(by_bits.collect());
        }
        self.slot_values = Some(slot_values);
        self
    }

    /// With leaf values: adds each row's sum over the trees, in tree order, to
    /// `out[row * stride + target]`. False (nothing done) without them.
    pub fn sum(&self, x: &[f32], width: usize, rows: usize, out: &mut [f32], stride: usize, target: usize) -> bool {
        let Some(values) = &self.slot_values else { return false };
        let slots = 1usize << self.depth;
        let whole = rows / BLOCK * BLOCK;
        if (1..=SWEEP_MAX_DEPTH).contains(&self.depth) && whole > 0 {
            COLUMNS.with(|columns| {
                let mut columns = columns.borrow_mut();
                columns.resize(width, [0.0; BLOCK]);
                for r0 in (0..whole).step_by(BLOCK) {
                    for (f, column) in columns.iter_mut().enumerate() {
                        for (k, lane) in column.iter_mut().enumerate() {
                            *lane = x[(r0 + k) * width + f];
                        }
                    }
                    let acc = match &self.bit_values {
                        Some(by_bits) => self.sweep_dispatch::<true>(&columns, by_bits),
                        None => self.sweep_dispatch::<false>(&columns, values),
                    };
                    for (k, a) in acc.iter().enumerate() {
                        out[(r0 + k) * stride + target] += a;
                    }
                }
            });
        }
        let walked = if (1..=SWEEP_MAX_DEPTH).contains(&self.depth) { whole } else { 0 };
        for r0 in (walked..whole).step_by(BLOCK) {
            let mut acc = [0f32; BLOCK];
            self.dispatch::<BLOCK>(x, width, r0, &mut |tree, at| {
                for (a, &slot) in acc.iter_mut().zip(at) {
                    *a += values[tree * slots + slot];
                }
            });
            for (k, a) in acc.iter().enumerate() {
                out[(r0 + k) * stride + target] += a;
            }
        }
        for r in whole..rows {
            let mut acc = 0f32;
            self.dispatch::<1>(x, width, r, &mut |tree, at| acc += values[tree * slots + at[0]]);
            out[r * stride + target] += acc;
        }
        true
    }

    /// [`Perfect::sweep`] with the test, the missing-value check and the depth fixed at compile time;
    /// `BY_BITS`: `values` are [`Perfect::bit_values`], else slot values.
    fn sweep_dispatch<const BY_BITS: bool>(&self, columns: &[[f32; BLOCK]], values: &[f32]) -> [f32; BLOCK] {
        macro_rules! depths {
            ($strict:literal, $nan:literal) => {
                match self.depth {
                    1 => self.sweep::<$strict, $nan, 1, BY_BITS>(columns, values),
                    2 => self.sweep::<$strict, $nan, 2, BY_BITS>(columns, values),
                    3 => self.sweep::<$strict, $nan, 3, BY_BITS>(columns, values),
                    _ => self.sweep::<$strict, $nan, 4, false>(columns, values),
                }
            };
        }
        match (self.strict, self.nan_yes) {
            (true, true) => depths!(true, true),
            (true, false) => depths!(true, false),
            (false, true) => depths!(false, true),
            (false, false) => depths!(false, false),
        }
    }

    /// One block of [`BLOCK`] rows (`columns`: the block transposed) through every tree of a
    /// forest `D` deep: each node's test for every lane (vectorised), packed into one bit per node,
    /// and the lane's leaf slot read from [`slot_table`] (or, `BY_BITS`, the value itself from the
    /// tree's table by bits); returns each row's sum of leaf values, in tree order.
    #[inline(always)]
    fn sweep<const STRICT: bool, const NAN: bool, const D: usize, const BY_BITS: bool>(
        &self,
        columns: &[[f32; BLOCK]],
        values: &[f32],
    ) -> [f32; BLOCK] {
        let inner = (1usize << D) - 1;
        let per_tree = if BY_BITS { 1usize << inner } else { 1usize << D };
        let table = slot_table(D as u32);
        let mut acc = [0f32; BLOCK];
        for (nodes, leaves) in self.nodes.chunks_exact(inner).zip(values.chunks_exact(per_tree)) {
            let mut bits = [0u32; BLOCK];
            for (n, &(feature, threshold)) in nodes.iter().enumerate() {
                let column = &columns[(if NAN { feature & !NAN_YES } else { feature }) as usize];
                let nan_yes = NAN && feature & NAN_YES != 0;
                for (b, &v) in bits.iter_mut().zip(column) {
                    let yes = if STRICT { v < threshold } else { v <= threshold };
                    *b |= u32::from(yes | (nan_yes & v.is_nan())) << n;
                }
            }
            for (a, &b) in acc.iter_mut().zip(&bits) {
                *a += if BY_BITS { leaves[b as usize] } else { leaves[table[b as usize] as usize] };
            }
        }
        acc
    }

    /// Each row's leaf in each tree, handed to `leaf(row, global leaf)` tree by tree in order.
    pub fn run(&self, x: &[f32], width: usize, rows: usize, mut leaf: impl FnMut(usize, usize)) {
        let slots = 1usize << self.depth;
        let whole = rows / BLOCK * BLOCK;
        for r0 in (0..whole).step_by(BLOCK) {
            self.dispatch::<BLOCK>(x, width, r0, &mut |tree, at| {
                for (k, &slot) in at.iter().enumerate() {
                    leaf(r0 + k, self.leaves[tree * slots + slot] as usize);
                }
            });
        }
        // The rest one by one: a lone row walks alone, not beside seven copies of itself.
        for r in whole..rows {
            self.dispatch::<1>(x, width, r, &mut |tree, at| leaf(r, self.leaves[tree * slots + at[0]] as usize));
        }
    }

    /// [`Perfect::walk`] with `STRICT` and `NAN` (whether some node sends a missing value to
    /// `yes`) fixed at compile time.
    #[inline(always)]
    fn dispatch<const B: usize>(&self, x: &[f32], width: usize, r0: usize, sink: &mut impl FnMut(usize, &[usize; B])) {
        match (self.strict, self.nan_yes) {
            (true, true) => self.walk::<true, true, B>(x, width, r0, sink),
            (true, false) => self.walk::<true, false, B>(x, width, r0, sink),
            (false, true) => self.walk::<false, true, B>(x, width, r0, sink),
            (false, false) => self.walk::<false, false, B>(x, width, r0, sink),
        }
    }

    /// Rows `r0..r0 + B` through every tree, `B` walks side by side: `sink(tree, leaf slots)`.
    #[inline(always)]
    fn walk<const STRICT: bool, const NAN: bool, const B: usize>(
        &self,
        x: &[f32],
        width: usize,
        r0: usize,
        sink: &mut impl FnMut(usize, &[usize; B]),
    ) {
        let inner = (1usize << self.depth) - 1;
        let bases: [usize; B] = std::array::from_fn(|k| (r0 + k) * width);
        for tree in 0..self.trees {
            let nodes = &self.nodes[tree * inner..(tree + 1) * inner];
            let mut at = [0usize; B];
            for _ in 0..self.depth {
                for k in 0..B {
                    let (feature, threshold) = nodes[at[k]];
                    // The feature is below the width (checked at compile): one bound check on `x`.
                    let f = if NAN { feature & !NAN_YES } else { feature };
                    let v = x[bases[k] + f as usize];
                    let pass = if STRICT { v < threshold } else { v <= threshold };
                    let yes = pass | (NAN && (feature & NAN_YES != 0) & v.is_nan());
                    at[k] = 2 * at[k] + 2 - usize::from(yes);
                }
            }
            for a in &mut at {
                *a -= inner;
            }
            sink(tree, &at);
        }
    }
}

/// For a perfect tree `depth` deep: the leaf slot a row reaches, indexed by its tests' outcomes
/// (bit `n` set: it passes node `n`, level order). The same for every tree of that depth.
fn slot_table(depth: u32) -> &'static [u8] {
    static TABLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        (0..=SWEEP_MAX_DEPTH)
            .map(|d| {
                let inner = (1usize << d) - 1;
                (0..1usize << inner)
                    .map(|bits| {
                        let mut at = 0;
                        for _ in 0..d {
                            at = 2 * at + 2 - ((bits >> at) & 1);
                        }
                        (at - inner) as u8
                    })
                    .collect()
            })
            .collect()
    });
    &tables[depth as usize]
}

/// The number of tests on the longest path from `at` to a leaf.
fn depth_of(f: &Forest<'_>, at: u32) -> u32 {
    if at & f.leaf_flag != 0 {
        return 0;
    }
    1 + depth_of(f, f.yes[at as usize]).max(depth_of(f, f.no[at as usize]))
}

/// One tree being written into its padded slots.
struct Layout<'f, 'a> {
    f: &'a Forest<'f>,
    depth: u32,
    nodes: &'a mut [(u32, f32)],
    leaves: &'a mut [u32],
}

impl Layout<'_, '_> {
    /// Writes the subtree at `at` into slot `slot` of level `level`.
    fn place(&mut self, at: u32, slot: usize, level: u32) {
        let inner = self.nodes.len();
        if level == self.depth {
            // Only a leaf reaches the last level: the depth is the forest's deepest path.
            self.leaves[slot - inner] = at & !self.f.leaf_flag;
            return;
        }
        if at & self.f.leaf_flag != 0 {
            // A leaf above the last level: a test that leads to it either way (feature 0 is read
            // but does not matter).
            self.nodes[slot] = (0, 0.0);
            self.place(at, 2 * slot + 1, level + 1);
            self.place(at, 2 * slot + 2, level + 1);
            return;
        }
        let node = at as usize;
        let nan = if self.f.missing_yes.get(node).copied().unwrap_or(false) { NAN_YES } else { 0 };
        self.nodes[slot] = (self.f.features[node] | nan, self.f.thresholds[node]);
        self.place(self.f.yes[node], 2 * slot + 1, level + 1);
        self.place(self.f.no[node], 2 * slot + 2, level + 1);
    }
}

#[cfg(test)]
mod tests {
    //! The padded layout, walked and swept, against a plain walk of the original trees, on random
    //! forests of every depth the layout takes, with ties, missing values and both tests.

    use super::*;

    use crate::random_forest::{Flat, Rng, LEAF};

    #[test]
    fn walked_and_swept_padded_forests_reach_the_leaves_a_plain_walk_reaches() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let width = 5;
        for case in 0..200 {
            let depth = 1 + (case % MAX_DEPTH as usize) as u32;
            let strict = case % 2 == 1;
            let mut flat = Flat::default();
            for _ in 0..1 + rng.below(12) {
                let root = flat.grow(&mut rng, depth, width);
                flat.roots.push(root);
            }
            let values: Vec<f32> = (0..flat.leaves).map(|_| rng.below(1000) as f32 / 7.0 - 60.0).collect();
            // 8-row blocks and a remainder; values on, around and between the thresholds, and NaN.
            let rows = 1 + rng.below(30);
            let x = rng.rows(rows, width);
            let forest = flat.forest(width, strict);
            let Some(perfect) = Perfect::new(&forest) else { panic!("depth {depth} is within MAX_DEPTH") };
            let expected = flat.leaves(&x, width, strict);
            let mut walked = vec![Vec::new(); rows];
            perfect.run(&x, width, rows, |r, leaf| walked[r].push(leaf));
            assert_eq!(walked, expected, "case {case}: depth {depth}, strict {strict}");
            let summed_in_order: Vec<f32> =
                expected.iter().map(|leaves| leaves.iter().fold(0.0, |s, &l| s + values[l])).collect();
            let mut out = vec![0.0; rows];
            assert!(perfect.with_leaf_values(&values).sum(&x, width, rows, &mut out, 1, 0));
            assert_eq!(out, summed_in_order, "case {case}: depth {depth}, strict {strict}");
        }
    }

    #[test]
    fn the_slot_table_follows_the_walk() {
        // Depth 2 (bit n: node n passes): node 0 passes → node 1, which sends a pass to slot 0 and a
        // fail to slot 1; node 0 fails → node 2, which sends a pass to slot 2 and a fail to slot 3.
        assert_eq!(slot_table(2), &[3, 1, 3, 0, 2, 1, 2, 0]);
        assert_eq!(slot_table(0), &[0]);
    }

    #[test]
    fn forests_deeper_than_the_layout_are_left_to_the_other_layouts() {
        let mut flat = Flat::default();
        let mut at = flat.leaves | LEAF;
        flat.leaves += 1;
        for _ in 0..=MAX_DEPTH {
            let id = flat.features.len() as u32;
            flat.features.push(0);
            flat.thresholds.push(0.0);
            flat.missing_yes.push(false);
            flat.yes.push(at);
            flat.no.push(flat.leaves | LEAF);
            flat.leaves += 1;
            at = id;
        }
        flat.roots.push(at);
        assert!(Perfect::new(&flat.forest(1, false)).is_none());
    }
}
